"""Reading a sweep file: its [sweep] table, checked for shape and types.

Only the sweep file's own structure is checked here; whether its keys and values are
valid pipeline overrides is the pipeline loader's call (check.py), so the two never
disagree about what `sparseq train` would accept.
"""

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.loader import read_toml
from sparseq.pipeline.config.paths import display
from sparseq.sweeps.errors import SweepError

SWEEP_KEYS = ("name", "pipelines", "tasks", "seeds", "seeds_per_process", "overrides", "grid", "resources")
RESOURCE_KEYS = ("num_cpus", "num_gpus")
# Keys the sweep sets for every run itself: one folder layout for the whole sweep.
MANAGED_KEYS = ("run.name", "run.out_dir", "run.checkpoint_dir", "run.progress")
SEED_KEYS = ("run.seed", "run.seeds")
TASK_KEY = "env.task_id"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
Scalar = bool | int | float | str


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one run asks Ray for (a pack of seeds is one run)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A sweep file, read. Override keys are dotted with underscores (dashes are
    accepted in the file, as on the command line) in file order."""

    path: Path
    name: str
    pipelines: tuple[str, ...]
    tasks: tuple[str, ...]  # empty: each pipeline's own env.task_id
    seeds: tuple[int, ...]  # empty: each pipeline's own run.seed
    seeds_per_process: int
    overrides: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]
    resources: Resources

    @property
    def source(self) -> str:
        """How errors name the file."""
        return display(self.path)


def normalize_key(key: str) -> str:
    """`run.total-steps` and `run.total_steps` are one key, as in `sparseq train` flags."""
    return key.strip().removeprefix("--").replace("-", "_")


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`"replay.batch_size" = 32` and `[sweep.overrides.replay] batch_size = 32` both
    become {"replay.batch_size": 32}."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _is_value(value: Any) -> bool:
    """A value a `--key=VALUE` flag can carry: a scalar or a flat list of scalars."""
    if isinstance(value, list):
        return all(isinstance(v, Scalar) for v in value)
    return isinstance(value, Scalar)


def _error(source: str, key: str, value: Any, reason: str) -> SweepError:
    return SweepError(str(ConfigError(source, reason, key, value, has_value=True)))


def _string_list(source: str, table: dict[str, Any], key: str, required: bool) -> tuple[str, ...]:
    value = table.get(key, [] if not required else None)
    if value is None:
        raise SweepError(f"{source}: sweep.{key}: missing (a list of names)")
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _error(source, f"sweep.{key}", value, "must be a list of names")
    if required and not value:
        raise _error(source, f"sweep.{key}", value, "is empty: the grid has no runs")
    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise _error(source, f"sweep.{key}", value, f"{twice[0]!r} is given twice")
    return tuple(value)


def _seeds(source: str, table: dict[str, Any]) -> tuple[int, ...]:
    seeds = table.get("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise _error(source, "sweep.seeds", seeds, "must be a list of integers")
    if "seeds" in table and not seeds:
        raise _error(source, "sweep.seeds", seeds, "is empty: the grid has no runs")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise _error(source, "sweep.seeds", seeds, f"seed {twice[0]} is given twice")
    if any(s < 0 for s in seeds):
        raise _error(source, "sweep.seeds", seeds, "seeds must be >= 0")
    return tuple(seeds)


def _overrides(source: str, table: Any, section: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise _error(source, f"sweep.{section}", table, "must be a table of key = value")
    out: dict[str, Any] = {}
    for raw, value in _flat(table).items():
        key = normalize_key(raw)
        if key in out:
            raise _error(source, f"sweep.{section}.{raw}", value, f"{key} is given twice")
        out[key] = value
    return out


def _grid(source: str, table: Any) -> dict[str, tuple[Any, ...]]:
    axes = _overrides(source, table, "grid")
    for key, values in axes.items():
        if not isinstance(values, list):
            raise _error(source, f"sweep.grid.{key}", values, "an axis must be a list of values")
        if not values:
            raise _error(source, f"sweep.grid.{key}", values, "an axis needs at least one value: the grid is empty")
        bad = next((v for v in values if not _is_value(v)), None)
        if bad is not None:
            raise _error(source, f"sweep.grid.{key}", bad, "each value must be a number, string, boolean or list")
        if len({repr(v) for v in values}) != len(values):
            raise _error(source, f"sweep.grid.{key}", values, "a value is given twice")
    return {key: tuple(values) for key, values in axes.items()}


def _resources(source: str, table: Any) -> Resources:
    if not isinstance(table, dict):
        raise _error(source, "sweep.resources", table, "must be a table (num_cpus, num_gpus)")
    for key, value in table.items():
        if key not in RESOURCE_KEYS:
            close = difflib.get_close_matches(key, RESOURCE_KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(RESOURCE_KEYS)}"
            raise _error(source, f"sweep.resources.{key}", value, f"unknown key{hint}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise _error(source, f"sweep.resources.{key}", value, "must be a number >= 0")
    resources = Resources(**{k: float(v) for k, v in table.items()})
    if resources.num_cpus == 0 and resources.num_gpus == 0:
        # Ray would then start every run at once, whatever the machine has.
        raise _error(source, "sweep.resources.num_cpus", 0, "a run needs some resource (num_cpus or num_gpus > 0)")
    return resources


def _check_conflicts(spec: SweepSpec) -> None:
    """Keys the sweep sets itself, and values given twice (seeds, task)."""
    source = spec.source
    for section, table in (("overrides", spec.overrides), ("grid", spec.grid)):
        for key in table:
            value = list(table[key]) if section == "grid" else table[key]
            if key in MANAGED_KEYS:
                raise _error(source, f"sweep.{section}.{key}", value, "is set by the sweep for every run")
            if key in SEED_KEYS and spec.seeds:
                raise _error(source, f"sweep.{section}.{key}", value, "seeds given twice: here and in sweep.seeds")
            if key == TASK_KEY and spec.tasks:
                raise _error(source, f"sweep.{section}.{key}", value, "the task given twice: here and in sweep.tasks")
    both = [k for k in spec.overrides if k in spec.grid]
    if both:
        raise _error(source, f"sweep.grid.{both[0]}", list(spec.grid[both[0]]), "also set in [sweep.overrides]")
    given = [k for k in SEED_KEYS if k in spec.overrides or k in spec.grid]
    if len(given) == 2:
        raise SweepError(f"{source}: seeds given twice: run.seed and run.seeds (use sweep.seeds)")


def read_sweep(path: Path) -> SweepSpec:
    """The sweep file at `path`; a SweepError (one line) for anything malformed."""
    try:
        data = read_toml(path)  # "FILE: TOML syntax error: ... (at line L, column C)"
    except ConfigError as error:
        raise SweepError(str(error)) from None
    source = display(path)
    extra = [k for k in data if k != "sweep"]
    if extra:
        raise _error(source, extra[0], data[extra[0]], "unknown table or key: a sweep file has only [sweep]")
    table = data.get("sweep")
    if not isinstance(table, dict):
        raise SweepError(f"{source}: no [sweep] table (see docs/sweeps.md)")
    for key in table:
        if key not in SWEEP_KEYS:
            close = difflib.get_close_matches(key, SWEEP_KEYS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(SWEEP_KEYS)}"
            raise _error(source, f"sweep.{key}", table[key], f"unknown key{hint}")
    name = table.get("name", path.stem)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise _error(source, "sweep.name", name, "must be a folder name (letters, digits, '.', '_', '-')")
    per_process = table.get("seeds_per_process", 1)
    if isinstance(per_process, bool) or not isinstance(per_process, int) or per_process < 1:
        raise _error(source, "sweep.seeds_per_process", per_process, "must be an integer >= 1")
    seeds = _seeds(source, table)
    if per_process > 1 and not seeds:
        raise _error(source, "sweep.seeds_per_process", per_process, "packs seeds: it needs sweep.seeds")
    overrides = _overrides(source, table.get("overrides", {}), "overrides")
    bad = next((k for k, v in overrides.items() if not _is_value(v)), None)
    if bad is not None:
        reason = "must be a number, string, boolean or flat list"
        raise _error(source, f"sweep.overrides.{bad}", overrides[bad], reason)
    spec = SweepSpec(
        path=path,
        name=name,
        pipelines=_string_list(source, table, "pipelines", required=True),
        tasks=_string_list(source, table, "tasks", required=False),
        seeds=seeds,
        seeds_per_process=per_process,
        overrides=overrides,
        grid=_grid(source, table.get("grid", {})),
        resources=_resources(source, table.get("resources", {})),
    )
    if "tasks" in table and not spec.tasks:
        raise _error(source, "sweep.tasks", [], "is empty: the grid has no runs")
    _check_conflicts(spec)
    return spec
