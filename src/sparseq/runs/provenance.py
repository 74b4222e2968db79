"""run.json: where a run's checkpoints are, what software produced it, and its segments.

The checkpoint folder is recorded as an absolute path so `--resume RUN` works from any
working directory; versions and the git commit make a result traceable to its code.
"""

import datetime
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import sparseq
from sparseq.runs.checkpoint import write_json

PACKAGES = ("jax", "jaxlib", "equinox", "optax", "envpool", "orbax-checkpoint", "numpy", "wandb", "tyro")


def _package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> dict[str, Any] | None:
    """The commit of the checkout sparseq is imported from (None when installed from a
    wheel or git is missing), and whether it had uncommitted changes."""
    source = Path(sparseq.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def software() -> dict[str, Any]:
    return {
        "sparseq": sparseq.__version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "packages": _package_versions(),
    }


def write_run_record(folder: Path, checkpoints: Path) -> None:
    write_json(
        folder / "run.json",
        {"checkpoints": str(checkpoints.absolute()), "software": software(), "segments": [{"started": now()}]},
    )


def read_run_record(folder: Path) -> dict[str, Any]:
    path = folder / "run.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def add_segment(folder: Path, segment: dict[str, Any]) -> None:
    """Appends a resumed segment (its start step, time, changed keys, software)."""
    record = read_run_record(folder)
    record.setdefault("segments", []).append({"started": now(), **segment, "software": software()})
    write_json(folder / "run.json", record)
