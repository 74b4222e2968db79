"""Pipeline files -> PipelineConfig, with `extends`, environment presets, command-line
overrides, type checks and range checks. Every failure is a one-line ConfigError.

Precedence, lowest first: schema defaults, the env preset (`[env] preset = "..."`),
the `extends` chain (base first), the file itself, command-line flags.
"""

import dataclasses
import difflib
import tomllib
import typing
from pathlib import Path
from typing import Any

from sparseq.pipeline.config.coerce import build_dataclass, flatten, set_dotted
from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.paths import display, pipelines_dir, presets_dir, resolve_pipeline_path
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.config.stage_entries import StageAssembler
from sparseq.pipeline.config.typed_value import CLI, typed_value
from sparseq.pipeline.config.validate import validate

# What an environment preset may set: the env options and env-specific replay choices.
PRESET_SECTIONS = ("env", "replay")
Sources = dict[str, str]  # dotted key -> where its value came from


def read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(display(path), "file not found")
    if path.is_dir():
        raise ConfigError(display(path), "is a folder, not a pipeline file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(display(path), f"TOML syntax error: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(display(path), "not a UTF-8 text file") from None


def _file_assignments(
    path: Path, seen: tuple[Path, ...] = (), folders: list[str] | None = None
) -> list[tuple[str, Any, str]]:
    """Assignments of a file and its `extends` chain, base first, presets first.
    `folders` collects each file's folder (where its `module:Class` kinds may live)."""
    resolved = path.resolve()
    if folders is not None and str(resolved.parent) not in folders:
        folders.append(str(resolved.parent))
    if resolved in seen:
        raise ConfigError(display(path), "extends itself (cycle)", "extends", str(path))
    data = read_toml(path)
    source = display(path)
    assignments: list[tuple[str, Any, str]] = []
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(source, "must be a file name", "extends", base)
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        base_path = _base_file(base_path, base)
        if base_path is None:
            reason = f"base file {base} not found next to this file or among the shipped pipelines"
            raise ConfigError(source, reason, "extends", base)
        assignments.extend(_file_assignments(base_path, (*seen, resolved), folders))
    env = data.get("env")
    if isinstance(env, dict) and "preset" in env:
        preset = env.pop("preset")
        assignments.extend(_preset_assignments(preset, source))
    assignments.extend(flatten(data, source))
    return assignments


def _base_file(near: Path, base: str) -> Path | None:
    """`extends = base`: next to the extending file first, then a shipped pipeline of
    that name (pipelines/), with or without .toml."""
    candidates = [near, pipelines_dir() / base]
    if not base.endswith(".toml"):
        candidates += [near.with_name(near.name + ".toml"), pipelines_dir() / f"{base}.toml"]
    return next((c for c in candidates if c.is_file()), None)


def preset_path(name: str) -> Path:
    return presets_dir() / f"{name}.toml"


def available_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def _preset_assignments(preset: Any, source: str) -> list[tuple[str, Any, str]]:
    if not isinstance(preset, str):
        raise ConfigError(source, "must be a preset name", "env.preset", preset)
    path = preset_path(preset)
    if not path.exists():
        close = difflib.get_close_matches(preset, available_presets(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; presets: {', '.join(available_presets())}"
        raise ConfigError(source, f"no preset envs/{preset}.toml{hint}", "env.preset", preset)
    data = read_toml(path)
    tables = {}
    for section in PRESET_SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(display(path), "must be a table", section, table)
        tables[section] = table
    return flatten(tables, display(path))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, hint in _field_types(cls).items():
        if name in ("learner", "operators") and not prefix:
            continue
        if dataclasses.is_dataclass(hint):
            keys.extend(_all_keys(hint, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _lookup(cls: type, dotted: str, source: str, value: Any) -> Any:
    """The type hint of `dotted` in `cls`, or a ConfigError with a suggestion."""
    hint: Any = cls
    for part in dotted.split("."):
        fields = _field_types(hint) if dataclasses.is_dataclass(hint) else {}
        if part not in fields:
            close = difflib.get_close_matches(dotted, _all_keys(cls), n=1, cutoff=0.6)
            hint_text = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(source, f"unknown key{hint_text}", dotted, value)
        hint = fields[part]
    if dataclasses.is_dataclass(hint):
        raise ConfigError(source, "is a section, not a value", dotted, value)
    return hint


def parse_overrides(args: list[str]) -> list[tuple[str, Any, str]]:
    """`--section.key value`, `--section.key=value`, `--flag` / `--no-flag`, and
    several values for list keys (`--network.hidden 64 64`). Dashes and underscores
    in key names are interchangeable."""
    assignments: list[tuple[str, Any, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(CLI, "expected --section.key VALUE", "", arg)
        name = arg[2:]
        value: Any
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        else:
            values = []
            i += 1
            while i < len(args) and not (args[i].startswith("--") and not _is_number(args[i])):
                values.append(args[i])
                i += 1
            if not values:
                value = True
                leaf = name.rsplit(".", 1)
                if name.startswith(("no-", "no_")):  # --no-run.progress
                    name, value = name[3:], False
                elif leaf[-1].startswith(("no-", "no_")):  # --run.no-progress (tyro's form)
                    leaf[-1] = leaf[-1][3:]
                    name, value = ".".join(leaf), False
            else:
                value = values[0] if len(values) == 1 else values
        assignments.append((name.replace("-", "_"), value, CLI))
    return assignments


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def config_from_assignments(
    assignments: list[tuple[str, Any, str]], search_folders: tuple[str, ...] = ()
) -> tuple[PipelineConfig, Sources]:
    """Typed PipelineConfig from (dotted key, value, source) in precedence order; the
    learner and operators go through their kinds' options classes."""
    tree: dict[str, Any] = {}
    sources: Sources = {}
    defaults = PipelineConfig()
    stages = StageAssembler(defaults.learner, defaults.operators)
    for dotted, value, source in assignments:
        if stages.takes(dotted):
            stages.add(dotted, value, source)
            continue
        hint = _lookup(PipelineConfig, dotted, source, value)
        typed = typed_value(hint, dotted, value, source)
        set_dotted(tree, dotted, typed)
        sources[dotted] = source
    python_path = tree.get("python_path", ())
    learner, operators, stage_sources, python_path = stages.build(tuple(python_path), search_folders)
    if python_path:
        tree["python_path"] = python_path
    sources.update(stage_sources)
    config = dataclasses.replace(build_dataclass(PipelineConfig, tree), learner=learner, operators=operators)
    return config, sources


def load_pipeline(name: str | Path | None, overrides: list[str] = ()) -> tuple[PipelineConfig, Sources, Path | None]:
    """Loads a pipeline file (or the schema defaults when `name` is None), applies
    flag overrides, and validates. Returns (config, key sources, file path)."""
    assignments: list[tuple[str, Any, str]] = []
    path = None
    folders: list[str] = []
    if name is not None:
        path = resolve_pipeline_path(str(name))
        assignments.extend(_file_assignments(path, folders=folders))
    flags = parse_overrides(list(overrides))
    # `--env.preset NAME` switches preset: its env values go over the file's, under the other flags.
    for dotted, value, source in flags:
        if dotted == "env.preset":
            assignments.extend(_preset_assignments(value, source))
    assignments.extend(a for a in flags if a[0] != "env.preset")
    config, sources = config_from_assignments(assignments, tuple(folders))
    default_source = display(path) if path is not None else "defaults"

    def source_of(key: str) -> str:
        if key in sources:
            return sources[key]
        if key.startswith("operators.") and "operators" in sources:
            return sources["operators"]  # a default option of an operator a file listed
        return default_source

    config = validate(config, source_of)
    return config, sources, path
