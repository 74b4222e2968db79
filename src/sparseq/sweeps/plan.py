"""What each grid point needs on this invocation, from its folders alone.

    finished (summary.json "finished")                   skip
    diverged (summary.json "non-finite")                 keep as failed (a result: the
                                                         same seed diverges again), or
                                                         restart with --retry-failed
    a checkpoint, not finished (killed, stopped, error)  resume from it
    a folder without a checkpoint                        restart: remove, train anew
    nothing                                              new

Nothing here imports Ray or touches JAX: the plan is read before any worker starts.
"""

import dataclasses
import enum
import json
import shutil
from pathlib import Path
from typing import Any

from sparseq.sweeps.layout import SweepDir

FINISHED = "finished"
DIVERGED = "non-finite"


class Action(enum.StrEnum):
    SKIP = "skip"  # finished before
    KEEP_FAILED = "keep-failed"  # diverged before; not re-run
    NEW = "new"
    RESUME = "resume"
    RESTART = "restart"

    @property
    def runs(self) -> bool:
        return self in (Action.NEW, Action.RESUME, Action.RESTART)


@dataclasses.dataclass(frozen=True)
class Step:
    run_id: str
    action: Action
    why: str


def read_summary(folder: Path) -> dict[str, Any] | None:
    """summary.json, None when missing or unreadable (a run killed while writing it
    has its atomic write's .tmp instead)."""
    try:
        data = json.loads((folder / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def has_checkpoint(folder: Path) -> bool:
    """orbax names a complete step's folder by the step; a save in progress is a
    temporary folder with another name, so a digit-named folder is whole."""
    return folder.is_dir() and any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())


def step_for(layout: SweepDir, run_id: str, retry_failed: bool = False) -> Step:
    folder = layout.run_folder(run_id)
    if not folder.exists():
        return Step(run_id, Action.NEW, "not started")
    summary = read_summary(folder) or {}
    status = summary.get("status")
    if status == FINISHED:
        return Step(run_id, Action.SKIP, "finished")
    if status == DIVERGED:
        if retry_failed:
            return Step(run_id, Action.RESTART, "diverged before; --retry-failed")
        return Step(run_id, Action.KEEP_FAILED, "diverged before (--retry-failed runs it again)")
    was = f"{status}" if status else "interrupted"
    if has_checkpoint(layout.checkpoint_folder(run_id)):
        return Step(run_id, Action.RESUME, f"{was}, has a checkpoint")
    return Step(run_id, Action.RESTART, f"{was} before its first checkpoint")


def plan(layout: SweepDir, run_ids: list[str], retry_failed: bool = False) -> list[Step]:
    return [step_for(layout, run_id, retry_failed) for run_id in run_ids]


def clear(layout: SweepDir, run_id: str) -> None:
    """Removes what a run left before it starts from scratch: its folder and its
    checkpoints (a stale checkpoint would otherwise be mixed into the new run's)."""
    shutil.rmtree(layout.run_folder(run_id), ignore_errors=True)
    shutil.rmtree(layout.checkpoint_folder(run_id), ignore_errors=True)
