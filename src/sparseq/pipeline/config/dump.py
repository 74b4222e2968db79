"""Writes a PipelineConfig back as a self-contained TOML file (no extends, no preset)."""

import dataclasses
from typing import Any

from sparseq.pipeline.config.schema import PipelineConfig


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _table(obj: Any, prefix: str, lines: list[str]) -> None:
    scalars, tables = [], []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        (tables if dataclasses.is_dataclass(value) else scalars).append((f.name, value))
    if prefix and scalars:
        lines.append(f"\n[{prefix}]")
    for name, value in scalars:
        lines.append(f"{name} = {_value(value)}")
    for name, value in tables:
        _table(value, f"{prefix}.{name}" if prefix else name, lines)


def to_toml(config: PipelineConfig) -> str:
    lines = ["# Resolved pipeline: every key, no extends or preset. `sparseq train THIS_FILE` reruns it."]
    _table(config, "", lines)
    return "\n".join(lines) + "\n"


def to_dict(config: PipelineConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
