"""Where pipelines and environment presets live."""

import os
from pathlib import Path

PIPELINES = "pipelines"
PRESETS = "envs"


def project_root() -> Path:
    """The folder holding pipelines/ and envs/.

    SPARSEQ_HOME wins; otherwise the current folder or one of its parents; otherwise
    the source checkout this package was installed from.
    """
    if "SPARSEQ_HOME" in os.environ:
        return Path(os.environ["SPARSEQ_HOME"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / PIPELINES).is_dir() and (folder / PRESETS).is_dir():
            return folder
    return Path(__file__).resolve().parents[4]


def pipelines_dir() -> Path:
    return project_root() / PIPELINES


def presets_dir() -> Path:
    return project_root() / PRESETS


def resolve_pipeline_path(name: str) -> Path:
    """A path as given, or a name under pipelines/ (with or without .toml)."""
    path = Path(name)
    if path.exists() or (path.suffix == ".toml" and path.parent != Path(".")):
        return path
    for candidate in (pipelines_dir() / name, pipelines_dir() / f"{name}.toml"):
        if candidate.exists():
            return candidate
    return path


def display(path: Path) -> str:
    """A path relative to the current folder when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
