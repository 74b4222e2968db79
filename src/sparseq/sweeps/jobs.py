"""What one worker needs to run one grid point, as plain JSON-able data: the same job
goes to a Ray task (pickled) or to a `python -m sparseq.sweeps.worker` subprocess
(as an argument), and the worker loads its config itself with the same flags the
driver validated.
"""

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparseq.sweeps.flags import to_flag

if TYPE_CHECKING:  # the worker imports Job: no pipeline (and so no JAX) before its env is set
    from sparseq.sweeps.grid import GridPoint
    from sparseq.sweeps.layout import SweepDir
    from sparseq.sweeps.plan import Action
    from sparseq.sweeps.spec import SweepSpec

# Passed to every worker: where pipelines/ and envs/ are (a Ray worker does not start
# in the driver's folder) and W&B's quiet mode, as the CLI sets it.
WORKER_ENV = ("SPARSEQ_HOME", "WANDB_SILENT", "WANDB_MODE", "JAX_PLATFORMS", "SPARSEQ_COMPILATION_CACHE")


def sweep_flags(spec: "SweepSpec", layout: "SweepDir", point: "GridPoint") -> list[str]:
    """The keys the sweep sets for every run: one folder layout, no progress bars (a
    worker's output goes to a log file), the W&B group unless the file sets one."""
    flags = [
        to_flag("run.name", point.id),
        to_flag("run.out_dir", str(layout.runs)),
        to_flag("run.checkpoint_dir", str(layout.checkpoints)),
        to_flag("run.progress", False),
    ]
    if "run.wandb.group" not in point.assignments:
        flags.append(to_flag("run.wandb.group", spec.name))
    return flags


@dataclasses.dataclass(frozen=True)
class Job:
    run_id: str
    mode: str  # Action.NEW, RESTART (train from scratch) or RESUME
    pipeline_path: str
    flags: list[str]  # the point's flags, then the sweep's
    folder: str
    checkpoints: str
    log: str
    events: str
    cwd: str
    env: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Job":
        return cls(**data)


def make_job(spec: "SweepSpec", layout: "SweepDir", point: "GridPoint", action: "Action") -> Job:
    from sparseq.pipeline.config.paths import project_root

    env = {key: os.environ[key] for key in WORKER_ENV if key in os.environ}
    env.setdefault("SPARSEQ_HOME", str(project_root().absolute()))
    env.setdefault("WANDB_SILENT", "true")
    return Job(
        run_id=point.id,
        mode=str(action),
        pipeline_path=str(point.pipeline_path),
        flags=[*point.flags(), *sweep_flags(spec, layout, point)],
        folder=str(layout.run_folder(point.id)),
        checkpoints=str(layout.checkpoint_folder(point.id)),
        log=str(layout.log_file(point.id)),
        events=str(layout.events),
        cwd=str(Path.cwd()),
        env=env,
    )
