"""One seed's outputs of a run: its folder, metrics.jsonl, episodes.csv, W&B run and
what its summary reports.

A single-seed run has one, writing into the run folder. A pack of S seeds (run.seeds)
has S, each writing into seed-<s>/ of the pack's folder a run folder of its own (with
the single-seed pipeline.toml of that seed), so `sparseq report`, `evaluate`, `export`
read a seed of a pack as they read a separate run. The pack's checkpoints stay in
one place: a seed folder cannot be resumed alone (pack.json says which pack it is in).
"""

import json
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from sparseq.pipeline.config.dump import to_dict, to_toml
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.seed_pack import take_seed
from sparseq.runs.checkpoint import write_json
from sparseq.runs.log import MetricsLog, WandbLog

RECENT_EPISODES = 20
PACK_FILE = "pack.json"  # in a seed's folder of a pack: the pack's folder and the seed


def seed_folder_name(seed: int) -> str:
    return f"seed-{seed}"


def pack_of(folder: Path) -> Path | None:
    """The pack folder that seed folder `folder` belongs to; None for any other folder."""
    marker = folder / PACK_FILE
    if not marker.exists():
        return None
    try:
        return folder.parent if json.loads(marker.read_text()).get("pack") else None
    except (OSError, ValueError):
        return folder.parent


class SeedRun:
    """Attributes:
    config: the seed's single-seed config (run.seed its seed, no run.seeds).
    folder: where its outputs go.
    index: its position on the pack's seed axis; None in a single-seed run (no axis).
    evaluator: its periodic evaluator (an environment pool of its own), or None.
    """

    def __init__(self, config: PipelineConfig, folder: Path, index: int | None, evaluator: Any = None):
        self.config = config
        self.folder = folder
        self.index = index
        self.evaluator = evaluator
        self.log: MetricsLog | None = None
        self.wandb_log: WandbLog | None = None
        self.recent: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.returns: list[float] = []
        self.sparsity: float | None = None  # last logged sparsity/overall, when pruning
        self.actor_sparsity: float | None = None  # last logged actor/sparsity/overall (SAC)
        self.eval_return: float | None = None  # the last evaluation's mean return

    @property
    def seed(self) -> int:
        return self.config.run.seed

    @property
    def name(self) -> str:
        """Its W&B run name: the run folder's name, with the seed for a seed of a pack."""
        return self.folder.name if self.index is None else f"{self.folder.parent.name}-{self.folder.name}"

    # -- slices of the pack's arrays ---------------------------------------------
    def state_slice(self, tree: Any) -> Any:
        """Its slice of a state pytree (seed axis first)."""
        return tree if self.index is None else take_seed(tree, self.index)

    def metrics_slice(self, metrics: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Its slice of a chunk's metrics (cycles, S, ...)."""
        return metrics if self.index is None else {k: v[:, self.index] for k, v in metrics.items()}

    # -- files --------------------------------------------------------------------
    def create(self, pack: Path | None) -> None:
        """Makes the folder of a seed of a pack (`pack`: the pack's folder) with its own
        pipeline.toml; a single-seed run's folder is the run folder, made before."""
        if pack is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "pipeline.toml").write_text(to_toml(self.config))
        write_json(self.folder / PACK_FILE, {"pack": pack.name, "seed": self.seed, "index": self.index})

    def open(self, truncate_to: tuple[int, int] | None = None, wandb_id: str | None = None) -> None:
        self.log = MetricsLog(self.folder, truncate_to=truncate_to)
        self.wandb_log = WandbLog(self.config.run.wandb, self.folder, self.name, to_dict(self.config), run_id=wandb_id)

    def position(self) -> dict[str, Any]:
        """What a checkpoint records of it: its file positions and W&B run id."""
        return {
            "metrics_lines": self.log.metrics_lines(),
            "episodes_lines": self.log.episodes_lines(),
            "wandb_id": self.wandb_log.run_id,
        }

    def close(self, status: str | None = None) -> None:
        """Closes its files and finishes its W&B run (with `status` when it failed)."""
        if self.wandb_log is not None and status is not None:
            self.wandb_log.finish({"status": status})
        if self.log is not None:
            self.log.close()

    def restore_history(self) -> None:
        """Rebuilds the recent-return window from episodes.csv and the last sparsity
        and evaluation from metrics.jsonl (after a resume)."""
        from sparseq.outputs.plots import read_episodes

        _, returns = read_episodes(self.log.episodes_path)
        self.returns = [float(r) for r in returns]
        self.recent.extend(self.returns[-RECENT_EPISODES:])
        lines = self.log.path.read_text().splitlines() if self.log.path.exists() else []
        if lines:
            last = json.loads(lines[-1])
            self.sparsity = last.get("sparsity/overall")
            self.actor_sparsity = last.get("actor/sparsity/overall")
        evaluated = [json.loads(line).get("eval/return_mean") for line in lines]
        self.eval_return = next((r for r in reversed(evaluated) if r is not None), None)

    # -- what it reports ----------------------------------------------------------
    def take_episodes(self, record: dict[str, Any], episodes: list[tuple[int, float, int]]) -> None:
        if "sparsity/overall" in record:
            self.sparsity = record["sparsity/overall"]
        if "actor/sparsity/overall" in record:
            self.actor_sparsity = record["actor/sparsity/overall"]
        self.recent.extend(r for _, r, _ in episodes)
        self.returns.extend(r for _, r, _ in episodes)

    def return_recent(self) -> float | None:
        return float(np.mean(self.recent)) if self.recent else None

    def return_best_recent(self) -> float | None:
        if len(self.returns) < RECENT_EPISODES:
            return None
        window = np.convolve(self.returns, np.ones(RECENT_EPISODES) / RECENT_EPISODES, mode="valid")
        return float(window.max())
