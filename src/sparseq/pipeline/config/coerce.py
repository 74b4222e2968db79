"""Type checks (TOML values) and parsing (command-line text) against dataclass hints."""

import dataclasses
import types
import typing
from typing import Any


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
    if hint is typing.Any:
        return value
    raise ValueError(f"unsupported type {hint}")


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """tree["a"]["b"] = value for dotted "a.b"."""
    parts = dotted.split(".")
    for part in parts[:-1]:
        tree = tree.setdefault(part, {})
    tree[parts[-1]] = value


def build_dataclass(cls: type, tree: dict[str, Any]) -> Any:
    """`cls` from a nested dict of typed values (missing keys keep their defaults)."""
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in tree:
            hint = hints.get(f.name)
            value = tree[f.name]
            kwargs[f.name] = build_dataclass(hint, value) if dataclasses.is_dataclass(hint) else value
    return cls(**kwargs)


def flatten(data: dict[str, Any], source: str, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Nested tables -> (dotted key, value, source) assignments, in file order."""
    items = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(flatten(value, source, f"{path}."))
        else:
            items.append((path, value, source))
    return items
