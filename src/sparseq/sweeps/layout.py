"""Where everything of a sweep lives: one folder holds the grid, the runs, their
checkpoints, logs and the status table, so the folder alone is the sweep's record.

    SWEEP_DIR/sweep.json          the expanded grid (manifest.py)
    SWEEP_DIR/runs/<id>/          one run folder per grid point (a pack: seed-<s>/ inside)
    SWEEP_DIR/checkpoints/<id>/   its checkpoints (run.checkpoint_dir, absolute)
    SWEEP_DIR/logs/<id>.log       its stdout and stderr, every segment appended
    SWEEP_DIR/events.jsonl        what each invocation started and how it ended (events.py)
    SWEEP_DIR/status.md, .json    the live status table (status.py)
"""

import dataclasses
from pathlib import Path

DEFAULT_PARENT = "sweeps"


@dataclasses.dataclass(frozen=True)
class SweepDir:
    root: Path  # absolute: the paths below go into pipeline.toml and run.json

    @classmethod
    def at(cls, out: str | None, name: str) -> "SweepDir":
        return cls(Path(out if out else Path(DEFAULT_PARENT) / name).absolute())

    @property
    def manifest(self) -> Path:
        return self.root / "sweep.json"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def status_md(self) -> Path:
        return self.root / "status.md"

    @property
    def status_json(self) -> Path:
        return self.root / "status.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def run_folder(self, run_id: str) -> Path:
        return self.runs / run_id

    def checkpoint_folder(self, run_id: str) -> Path:
        # The runner puts checkpoints in run.checkpoint_dir / <run folder name>.
        return self.checkpoints / run_id

    def log_file(self, run_id: str) -> Path:
        return self.logs / f"{run_id}.log"

    def create(self) -> None:
        for folder in (self.runs, self.checkpoints, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
