"""What the fidelity benches share: the algorithm list flag, a fresh output folder and one seed's run."""

import dataclasses
import time
import warnings
from collections.abc import Collection, Sequence
from pathlib import Path


def chosen_algorithms(text: str, known: Collection[str]) -> list[str]:
    """ "dqn, isdqn" -> ["dqn", "isdqn"]; exits with a one-line message on an unknown name."""
    algorithms = [a.strip() for a in text.split(",") if a.strip()]
    for a in algorithms:
        if a not in known:
            raise SystemExit(f"unknown algorithm {a!r}; known: {', '.join(known)}")
    return algorithms


def fresh_out_dir(root: str) -> Path:
    """ROOT/<time>/, created."""
    out_dir = Path(root) / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def train_seed(pipeline: str, name: str, seed: int, steps: int, out_dir: Path, axes: Sequence[str] = ()) -> Path:
    """`sparseq train PIPELINE --run.seed SEED --run.total-steps STEPS` in-process, run
    folder OUT_DIR/NAME-*, checkpoints under OUT_DIR/checkpoints (out of checkpoints/),
    no progress bar, W&B off; `axes` are further overrides. Returns the run folder."""
    from sparseq.pipeline.config.loader import load_pipeline
    from sparseq.runs.runner import train

    # gymnasium warns about float64 Box bounds at every pool creation (the CLI silences it too).
    warnings.filterwarnings("ignore", module="gymnasium")

    overrides = [
        *axes,
        "--run.seed", str(seed),
        "--run.total-steps", str(steps),
        "--run.out-dir", str(out_dir),
        "--run.name", name,
        "--run.no-progress",
        "--run.wandb.mode", "disabled",
    ]  # fmt: skip
    config, _, _ = load_pipeline(pipeline, overrides)
    run = dataclasses.replace(config.run, checkpoint_dir=str(out_dir / "checkpoints"))
    return train(dataclasses.replace(config, run=run)).folder
