"""The host loop: jitted chunks of update cycles, logging between chunks, results.

The hot path never returns to Python inside a chunk: a chunk is one `lax.scan` over
update cycles (or, for convolutional networks on CPU, one donated jitted call per
cycle, because XLA:CPU runs convolutions ~10x slower inside loops and conditionals).
Between chunks the host writes metrics.jsonl, W&B, and the progress bar.
"""

import dataclasses
import datetime
import json
import math
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from sparseq.config.build import build_pipeline
from sparseq.config.dump import to_dict, to_toml
from sparseq.config.schema import PipelineConfig
from sparseq.log import MetricsLog, WandbLog
from sparseq.pipeline import Pipeline, TrainState
from sparseq.plots import plot_returns

RECENT_EPISODES = 20


def loop_kind(config: PipelineConfig) -> str:
    if config.run.loop != "auto":
        return config.run.loop
    has_conv = config.network.kind != "mlp"
    return "cycle" if has_conv and jax.default_backend() == "cpu" else "scan"


def new_run_folder(config: PipelineConfig, name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(config.run.out_dir) / f"{name}-{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = Path(config.run.out_dir) / f"{name}-{stamp}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def tree_bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))


def tree_count(tree: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))


class ChunkRunner:
    """Runs `cycles` update cycles from a state, compiled once per (learn, cycles)."""

    def __init__(self, pipeline: Pipeline, kind: str):
        self.pipeline = pipeline
        self.kind = kind
        self._compiled: dict[tuple[bool, int], Any] = {}

    def _scan(self, learn: bool, cycles: int):
        key = (learn, cycles)
        if key not in self._compiled:
            body = lambda state, _: self.pipeline.cycle(state, learn)  # noqa: E731
            self._compiled[key] = eqx.filter_jit(
                lambda state: jax.lax.scan(body, state, None, length=cycles), donate="all"
            )
        return self._compiled[key]

    def _single(self, learn: bool):
        key = (learn, -1)
        if key not in self._compiled:
            self._compiled[key] = eqx.filter_jit(
                lambda state: self.pipeline.cycle(state, learn, unroll_collect=True), donate="all"
            )
        return self._compiled[key]

    def __call__(self, state: TrainState, learn: bool, cycles: int) -> tuple[TrainState, dict[str, np.ndarray]]:
        if self.kind == "scan":
            state, metrics = self._scan(learn, cycles)(state)
            return state, jax.device_get(metrics)
        step = self._single(learn)
        series = []
        for _ in range(cycles):
            state, metrics = step(state)
            series.append(metrics)
        series = jax.device_get(series)
        return state, jax.tree.map(lambda *xs: np.stack(xs), *series)


@dataclasses.dataclass
class RunResult:
    folder: Path
    summary: dict[str, Any]
    state: TrainState


class Progress:
    def __init__(self, total: int, enabled: bool, name: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", unit_scale=True, desc=name, dynamic_ncols=True, file=sys.stderr)

    def update(self, steps: int, postfix: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summarize_chunk(metrics: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[tuple[int, float, int]]]:
    """Host-side reduction of a chunk's per-cycle metrics to one log record."""
    record: dict[str, Any] = {}
    env_steps = metrics["env_steps"]  # (cycles,)
    done = metrics["episode_done"]  # (cycles, steps_per_cycle / N... flattened, N)
    returns, lengths = metrics["episode_return"], metrics["episode_length"]
    cycles = done.shape[0]
    per_cycle = done.reshape(cycles, -1)
    episodes = []
    for c, e in zip(*np.nonzero(per_cycle)):
        episodes.append(
            (int(env_steps[c]), float(returns.reshape(cycles, -1)[c, e]), int(lengths.reshape(cycles, -1)[c, e]))
        )
    record["train/episodes"] = len(episodes)
    if episodes:
        record["train/return_mean"] = float(np.mean([r for _, r, _ in episodes]))
        record["train/length_mean"] = float(np.mean([n for _, _, n in episodes]))
    record["train/epsilon"] = float(metrics["epsilon"].reshape(-1)[-1])
    updated = metrics["updated"].astype(bool)
    record["train/updates"] = int(updated.sum())
    skip = {"env_steps", "episode_done", "episode_return", "episode_length", "epsilon", "updated"}
    for name, values in metrics.items():
        if name in skip:
            continue
        if name == "loss":
            if updated.any():
                loss = values[updated]  # (updates, P)
                record["train/loss"] = float(loss.mean())
                if loss.shape[-1] > 1:
                    for i, v in enumerate(loss.mean(axis=0)):
                        record[f"population/loss_{i}"] = float(v)
        elif name == "head_losses":
            if updated.any() and values.shape[-1] > 1:
                for i, v in enumerate(values[updated].mean(axis=(0, 1))):
                    record[f"heads/loss_{i + 1}"] = float(v)
        elif values.dtype == bool:
            record[f"operators/{name}"] = int(values.sum())
        else:
            last = np.asarray(values[-1])
            if last.ndim == 0:
                record[name] = float(last)
            else:
                for i, v in enumerate(last.reshape(-1)):
                    record[f"{name}_{i}"] = float(v)
    return record, episodes


def train(
    config: PipelineConfig,
    *,
    name: str = "run",
    folder: Path | None = None,
    pipeline: Pipeline | None = None,
) -> RunResult:
    """Trains `config` and writes its run folder. Returns the folder, the summary, and
    the final state."""
    pipeline = pipeline or build_pipeline(config)
    folder = folder or new_run_folder(config, config.run.name or name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.toml").write_text(to_toml(config))
    log = MetricsLog(folder)
    wandb_log = WandbLog(config.run.wandb, folder, folder.name, to_dict(config))

    state = pipeline.init(jax.random.key(config.run.seed))
    kind = loop_kind(config)
    runner = ChunkRunner(pipeline, kind)
    steps_per_cycle = pipeline.steps_per_cycle
    total_cycles = math.ceil(config.run.total_steps / steps_per_cycle)
    cycles_per_chunk = max(config.run.log_every // steps_per_cycle, 1)
    first_learning_cycle = next((c for c in range(total_cycles) if pipeline.learns_in_cycle(c)), total_cycles)
    progress = Progress(total_cycles * steps_per_cycle, config.run.progress, folder.name)
    recent: deque[float] = deque(maxlen=RECENT_EPISODES)
    all_returns: list[float] = []
    started = time.perf_counter()
    cycle = 0
    interrupted = False
    try:
        while cycle < total_cycles:
            learn = cycle >= first_learning_cycle
            # Chunk ends on multiples of the log period so log points fall on round steps.
            end = min((cycle // cycles_per_chunk + 1) * cycles_per_chunk, total_cycles)
            if not learn:
                end = min(end, first_learning_cycle)
            chunk_started = time.perf_counter()
            state, metrics = runner(state, learn, end - cycle)
            chunk_steps = (end - cycle) * steps_per_cycle
            cycle = end
            elapsed = time.perf_counter() - chunk_started
            record, episodes = summarize_chunk(metrics)
            recent.extend(r for _, r, _ in episodes)
            all_returns.extend(r for _, r, _ in episodes)
            steps = cycle * steps_per_cycle
            record = {
                "env_steps": steps,
                "time": time.perf_counter() - started,
                "train/steps_per_second": chunk_steps / elapsed,
                "train/return_recent": float(np.mean(recent)) if recent else None,
                **record,
            }
            log.write(record)
            log.write_episodes(episodes)
            wandb_log.log(record, steps)
            progress.update(
                chunk_steps,
                {
                    "return": f"{record['train/return_recent']:.1f}" if recent else "-",
                    "loss": f"{record.get('train/loss', float('nan')):.3g}",
                },
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    wall = time.perf_counter() - started
    plot = plot_returns(folder, f"{config.algorithm} on {config.env.task_id} (seed {config.run.seed})")
    summary = {
        "algorithm": config.algorithm,
        "task_id": config.env.task_id,
        "seed": config.run.seed,
        "env_steps": cycle * steps_per_cycle,
        "episodes": len(all_returns),
        "return_recent": float(np.mean(recent)) if recent else None,
        "return_best_recent": None,
        "wall_seconds": wall,
        "steps_per_second": cycle * steps_per_cycle / wall if wall > 0 else None,
        "loop": kind,
        "online_parameters": tree_count(state.learner.online),
        "parameter_bytes": tree_bytes(state.learner.online) + tree_bytes(state.learner.target),
        "optimizer_bytes": tree_bytes(state.learner.opt_state),
        "interrupted": interrupted,
    }
    if len(all_returns) >= RECENT_EPISODES:
        window = np.convolve(all_returns, np.ones(RECENT_EPISODES) / RECENT_EPISODES, mode="valid")
        summary["return_best_recent"] = float(window.max())
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    wandb_log.log_images({"plots/returns": plot})
    wandb_log.finish(summary)
    log.close()
    if interrupted:
        raise KeyboardInterrupt
    return RunResult(folder=folder, summary=summary, state=state)
