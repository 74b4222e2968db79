"""Pipeline files -> PipelineConfig, with `extends`, environment presets, command-line
overrides, type checks and range checks. Every failure is a one-line ConfigError.

Precedence, lowest first: schema defaults, the env preset (`[env] preset = "..."`),
the `extends` chain (base first), the file itself, command-line flags.
"""

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.paths import display, presets_dir, resolve_pipeline_path
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.config.validate import validate

CLI = "command line"
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


def _flatten(data: dict[str, Any], source: str, prefix: str = "") -> list[tuple[str, Any, str]]:
    items = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(_flatten(value, source, f"{path}."))
        else:
            items.append((path, value, source))
    return items


def _file_assignments(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, Any, str]]:
    """Assignments of a file and its `extends` chain, base first, presets first."""
    resolved = path.resolve()
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
        if not base_path.exists() and not base.endswith(".toml"):
            base_path = base_path.with_name(base_path.name + ".toml")
        if not base_path.exists():
            raise ConfigError(source, f"base file {display(base_path)} not found", "extends", base)
        assignments.extend(_file_assignments(base_path, (*seen, resolved)))
    env = data.get("env")
    if isinstance(env, dict) and "preset" in env:
        preset = env.pop("preset")
        assignments.extend(_preset_assignments(preset, source))
    assignments.extend(_flatten(data, source))
    return assignments


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
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise ConfigError(display(path), "must be a table", "env", env)
    return _flatten({"env": env}, display(path))


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, hint in _field_types(cls).items():
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


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


def coerce(hint: Any, value: Any, *, from_text: bool) -> Any:
    """Checks (TOML) or parses (command line) `value` as `hint`; raises ValueError."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value in allowed:
            return value
        raise ValueError(f"must be {_type_name(hint)}")
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if from_text and isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, list | tuple):
            raise ValueError(f"must be {_type_name(hint)}")
        return tuple(coerce(item, v, from_text=from_text) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError("must be true or false")
    if hint is int:
        if from_text and isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                raise ValueError("must be an integer") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError("must be an integer")
    if hint is float:
        if from_text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ValueError("must be a number") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ValueError("must be a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError("must be a string")
    raise ValueError(f"unsupported type {hint}")


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


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def _build(cls: type, tree: dict[str, Any]) -> Any:
    kwargs = {}
    for name, hint in _field_types(cls).items():
        if name in tree:
            kwargs[name] = _build(hint, tree[name]) if dataclasses.is_dataclass(hint) else tree[name]
    return cls(**kwargs)


def config_from_assignments(assignments: list[tuple[str, Any, str]]) -> tuple[PipelineConfig, Sources]:
    tree: dict[str, Any] = {}
    sources: Sources = {}
    for dotted, value, source in assignments:
        hint = _lookup(PipelineConfig, dotted, source, value)
        if source == CLI and value is True and hint is not bool:
            raise ConfigError(source, "needs a value", f"--{dotted.replace('_', '-')}")
        try:
            typed = coerce(hint, value, from_text=source == CLI)
        except ValueError as error:
            raise ConfigError(source, str(error), dotted, value) from None
        _set(tree, dotted, typed)
        sources[dotted] = source
    return _build(PipelineConfig, tree), sources


def load_pipeline(name: str | Path | None, overrides: list[str] = ()) -> tuple[PipelineConfig, Sources, Path | None]:
    """Loads a pipeline file (or the schema defaults when `name` is None), applies
    flag overrides, and validates. Returns (config, key sources, file path)."""
    assignments: list[tuple[str, Any, str]] = []
    path = None
    if name is not None:
        path = resolve_pipeline_path(str(name))
        assignments.extend(_file_assignments(path))
    flags = parse_overrides(list(overrides))
    # `--env.preset NAME` switches preset: its env values go over the file's, under the other flags.
    for dotted, value, source in flags:
        if dotted == "env.preset":
            assignments.extend(_preset_assignments(value, source))
    assignments.extend(a for a in flags if a[0] != "env.preset")
    config, sources = config_from_assignments(assignments)
    default_source = display(path) if path is not None else "defaults"
    validate(config, lambda key: sources.get(key, default_source))
    return config, sources, path
