"""Every grid point through the pipeline loader before anything runs.

load_pipeline is what `sparseq train` and the worker use, so a point that passes here
loads the same way in the run; its ConfigError is reworded to name the sweep file and
the table the key came from.
"""

import difflib
from collections.abc import Callable
from pathlib import Path

from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.loader import load_pipeline
from sparseq.pipeline.config.paths import pipelines_dir, resolve_pipeline_path
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.config.typed_value import CLI
from sparseq.sweeps.errors import SweepError
from sparseq.sweeps.grid import GridPoint
from sparseq.sweeps.spec import SEED_KEYS, TASK_KEY, SweepSpec


def resolve_pipelines(spec: SweepSpec) -> dict[str, Path]:
    """Each pipeline of the sweep as an absolute file: a path relative to the sweep
    file, a path as given, or a name under pipelines/."""
    paths = {}
    for name in spec.pipelines:
        candidates = [spec.path.parent / name, resolve_pipeline_path(name)]
        if not name.endswith(".toml"):
            candidates.insert(1, spec.path.parent / f"{name}.toml")
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            shipped = sorted(p.stem for p in pipelines_dir().glob("*.toml"))
            close = difflib.get_close_matches(Path(name).stem, shipped, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; `sparseq list` shows the pipelines"
            raise SweepError(f"{spec.source}: sweep.pipelines = {name!r}: no such pipeline{hint}")
        paths[name] = found.resolve()
    return paths


def _table_of(spec: SweepSpec, key: str) -> str:
    """The sweep file's table that set `key` (for the error line)."""
    if key in spec.grid:
        return f"sweep.grid.{key}"
    if key in spec.overrides:
        return f"sweep.overrides.{key}"
    if key == TASK_KEY:
        return "sweep.tasks"
    if key in SEED_KEYS:
        return "sweep.seeds"
    return key


def _reworded(spec: SweepSpec, point: GridPoint, error: ConfigError) -> SweepError:
    if error.source == CLI:  # one of the sweep's own assignments: shown as the file has it, not as flag text
        key = error.key.removeprefix("--").replace("-", "_")
        value = point.assignments.get(key, error.value)
        shown = ConfigError(spec.source, error.reason, _table_of(spec, key), value, has_value=True)
        return SweepError(f"{shown} (run {point.id})")
    # The pipeline file (or a file it extends) is itself bad: name it.
    return SweepError(f"{spec.source}: pipeline {point.pipeline!r}: {error}")


def check_points(
    spec: SweepSpec, points: list[GridPoint], managed: Callable[[GridPoint], list[str]]
) -> dict[str, PipelineConfig]:
    """The validated config of every point (id -> config), with the sweep's own flags
    `managed(point)` after the point's (as the worker loads it); the first bad point
    raises SweepError."""
    if not points:
        raise SweepError(f"{spec.source}: the grid is empty")
    configs = {}
    for point in points:
        try:
            config, _, _ = load_pipeline(point.pipeline_path, [*point.flags(), *managed(point)])
        except ConfigError as error:
            raise _reworded(spec, point, error) from None
        configs[point.id] = config
    return configs
