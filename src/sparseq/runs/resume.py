"""`sparseq train --resume RUN`: the checks before a run continues.

A run continues from its run folder alone, from any working directory: the resolved
pipeline.toml written at the start, and the newest readable checkpoint in the folder
recorded in run.json (checkpoints/<run folder name>/ of the first segment's working
directory). Keys that only extend or display the run may change on resume; anything
else that differs (in the folder's pipeline.toml since the checkpoint, or in flags given
now) is an error that names the keys.

run.total_steps may change: schedules given as fractions of the run keep the steps of
the first segment (run.schedule_steps records its total), so a longer run goes on
where the shorter one was, with the same pruning window. A run that has reached its
total_steps is reported as finished and left untouched.
"""

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from sparseq.pipeline.config.dump import to_dict, to_toml
from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.loader import load_pipeline
from sparseq.pipeline.config.paths import display
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.runs.checkpoint import Checkpointer, CheckpointError
from sparseq.runs.provenance import add_segment, read_run_record
from sparseq.runs.seed_run import pack_of
from sparseq.runs.xla_threads import one_intra_op_thread_for_overlap

# Keys a resumed run may change: they extend the run or only change how it is shown.
CHANGEABLE = {"run.total_steps", "run.progress", "run.wandb.mode", "run.log_every", "run.chunk_seconds"}


class AlreadyFinished(Exception):
    """`--resume` of a run that has reached its total_steps: nothing to do (one line)."""


def _with_horizon(tree: dict[str, Any]) -> dict[str, Any]:
    """The config dict with run.schedule_steps resolved (0 means run.total_steps), so
    a resume that changed total_steps and recorded the old one compares equal; and
    run.seeds, which older checkpoints lack, as its default."""
    run = dict(tree.get("run", {}))
    run["schedule_steps"] = run.get("schedule_steps") or run.get("total_steps")
    run["seeds"] = list(run.get("seeds") or [])  # absent from checkpoints written before run.seeds existed
    return {**tree, "run": run}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flat(_with_horizon(old)), _flat(_with_horizon(new))
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


def checkpoints_of(folder: Path, config: PipelineConfig) -> Path:
    """The run's checkpoint folder: the one run.json records, else (older runs, or a
    run folder moved together with its checkpoints) CHECKPOINT_DIR/<name> next to the
    run folder's parent, else relative to the working directory."""
    recorded = read_run_record(folder).get("checkpoints")
    relative = Path(config.run.checkpoint_dir) / folder.name
    candidates = [Path(recorded)] if recorded else []
    if not relative.is_absolute():
        candidates.append(folder.absolute().parent.parent / relative)
    candidates.append(relative)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.absolute()
    raise CheckpointError(f"{display(candidates[0])}: no checkpoint to resume from (the folder does not exist)")


@dataclasses.dataclass(frozen=True)
class ResumePlan:
    """What a checked resume continues from."""

    config: PipelineConfig  # the config to continue with
    folder: Path  # the run folder
    step: int  # the checkpoint's environment step
    meta: dict[str, Any]  # the checkpoint's metadata
    checkpoints: Path  # the checkpoint folder
    changes: list[str]  # the (allowed) keys changed on this resume, "key old -> new"


def prepare_resume(run: str, overrides: list[str]) -> ResumePlan:
    """Loads and checks everything a resume needs; raises ConfigError/CheckpointError,
    or AlreadyFinished when the run has nothing left to do."""
    folder = find_run_folder(run)
    pack = pack_of(folder)
    if pack is not None:
        raise ConfigError(
            display(folder),
            f"is one seed of the packed run {display(pack)}, whose seeds resume together: "
            f"sparseq train --resume {display(pack)}",
        )
    pipeline_file = folder / "pipeline.toml"
    saved, _, _ = load_pipeline(pipeline_file)
    config, _, _ = load_pipeline(pipeline_file, overrides)
    if config.run.total_steps != saved.run.total_steps and not saved.run.schedule_steps:
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, schedule_steps=saved.run.total_steps))
    changes = differences(to_dict(saved), to_dict(config))
    refused = [d for d in changes if d.split(" ", 1)[0] not in CHANGEABLE]
    if refused:
        raise ConfigError("command line", f"cannot change a resumed run's pipeline: {'; '.join(refused)}")
    one_intra_op_thread_for_overlap(config.learner.options.overlap)  # orbax starts the backend
    checkpoints = checkpoints_of(folder, config)
    checkpointer = Checkpointer(checkpoints, include_replay=config.run.checkpoint_replay)
    step, meta = latest_readable(checkpointer)
    checkpointer.close()
    edited = [d for d in differences(meta["config"], to_dict(saved)) if d.split(" ", 1)[0] not in CHANGEABLE]
    if edited:
        raise ConfigError(display(pipeline_file), f"changed since the checkpoint at step {step}: {'; '.join(edited)}")
    if int(meta["env_steps"]) >= config.run.total_steps:
        raise AlreadyFinished(
            f"{display(folder)} already finished at step {int(meta['env_steps']):,} "
            f"(run.total_steps {config.run.total_steps:,}); nothing to do (raise run.total_steps to extend it)"
        )
    if not meta.get("include_replay", True) and not config.dataset.is_offline:
        warnings.warn(
            "the checkpoint has no replay buffer: the resumed run starts with an empty one (not exact)", stacklevel=2
        )
    return ResumePlan(config, folder, step, meta, checkpoints, changes)


def record_resume(plan: ResumePlan) -> None:
    """Records a resume: a new segment in run.json and, when keys changed, the new
    pipeline.toml with the resume history as comments at its top."""
    add_segment(plan.folder, {"from_step": plan.step, "changed": plan.changes})
    if plan.changes:
        pipeline_file = plan.folder / "pipeline.toml"
        history = [line for line in pipeline_file.read_text().splitlines() if line.startswith("# resumed")]
        note = f"# resumed at step {plan.step}: {'; '.join(plan.changes)}"
        pipeline_file.write_text("\n".join([*history, note, to_toml(plan.config)]))
