"""`sparseq train --resume RUN`: the checks before a run continues.

A run continues from its run folder alone: the resolved pipeline.toml written at the
start, and the newest readable checkpoint under checkpoints/<run folder name>/. Keys
that only extend or display the run may change on resume; anything else that differs
(in the folder's pipeline.toml since the checkpoint, or in flags given now) is an error
that names the keys.
"""

import warnings
from pathlib import Path
from typing import Any

from sparseq.runs.checkpoint import Checkpointer, CheckpointError
from sparseq.pipeline.config.dump import to_dict
from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.loader import load_pipeline
from sparseq.pipeline.config.paths import display
from sparseq.pipeline.config.schema import PipelineConfig

# Keys a resumed run may change: they extend the run or only change how it is shown.
CHANGEABLE = {"run.total_steps", "run.progress", "run.wandb.mode", "run.log_every"}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flat(old), _flat(new)
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def find_run_folder(run: str, out_dir: str = "runs") -> Path:
    path = Path(run)
    if not path.is_dir() and (Path(out_dir) / run).is_dir():
        path = Path(out_dir) / run
    if not path.is_dir():
        raise ConfigError(run, "run folder not found")
    if not (path / "pipeline.toml").exists():
        raise ConfigError(display(path), "not a run folder (no pipeline.toml)")
    return path


def latest_readable(checkpointer: Checkpointer) -> tuple[int, dict[str, Any]]:
    """The newest checkpoint whose metadata reads; older ones are tried when the newest
    is corrupt (with a warning)."""
    steps = checkpointer.all_steps()
    if not steps:
        raise CheckpointError(f"{display(checkpointer.directory)}: no checkpoint to resume from")
    last_error = None
    for step in reversed(steps):
        try:
            meta = checkpointer.read_meta(step)
            if "cycle" not in meta or "config" not in meta:
                raise CheckpointError(f"{checkpointer.directory / str(step)}: checkpoint metadata is incomplete")
            if last_error is not None:
                warnings.warn(f"{last_error}; resuming from step {step} instead", stacklevel=2)
            return step, meta
        except CheckpointError as error:
            last_error = error
    raise last_error


def prepare_resume(run: str, overrides: list[str]) -> tuple[PipelineConfig, Path, int, dict[str, Any]]:
    """Loads and checks everything a resume needs; raises ConfigError/CheckpointError."""
    folder = find_run_folder(run)
    pipeline_file = folder / "pipeline.toml"
    saved, _, _ = load_pipeline(pipeline_file)
    config, _, _ = load_pipeline(pipeline_file, overrides)
    changed = [d for d in differences(to_dict(saved), to_dict(config)) if d.split(" ", 1)[0] not in CHANGEABLE]
    if changed:
        raise ConfigError("command line", f"cannot change a resumed run's pipeline: {'; '.join(changed)}")
    from sparseq.runs.runner import checkpoint_folder

    checkpointer = Checkpointer(checkpoint_folder(config, folder), include_replay=config.run.checkpoint_replay)
    step, meta = latest_readable(checkpointer)
    checkpointer.close()
    edited = [d for d in differences(meta["config"], to_dict(saved)) if d.split(" ", 1)[0] not in CHANGEABLE]
    if edited:
        raise ConfigError(display(pipeline_file), f"changed since the checkpoint at step {step}: {'; '.join(edited)}")
    if not meta.get("include_replay", True):
        warnings.warn(
            "the checkpoint has no replay buffer: the resumed run starts with an empty one (not exact)", stacklevel=2
        )
    return config, folder, step, meta
