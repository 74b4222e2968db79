"""Writes a PipelineConfig back as a self-contained TOML file (no extends, no preset):
every section, the learner with its kind, and every operator in order."""

import dataclasses
from typing import Any

from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.stage import Stage


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)


def _table(obj: Any, prefix: str, lines: list[str], header: str | None = None, first: tuple = ()) -> None:
    scalars, tables = list(first), []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Stage) or (isinstance(value, tuple) and value and isinstance(value[0], Stage)):
            continue  # written after the sections; an empty operator list stays a top-level key
        (tables if dataclasses.is_dataclass(value) else scalars).append((f.name, value))
    if header is not None:
        lines.append(f"\n{header}")
    elif prefix and scalars:
        lines.append(f"\n[{prefix}]")
    for name, value in scalars:
        lines.append(f"{name} = {_value(value)}")
    for name, value in tables:
        _table(value, f"{prefix}.{name}" if prefix else name, lines)


def to_toml(config: PipelineConfig) -> str:
    lines = ["# Resolved pipeline: every key, no extends or preset. `sparseq train THIS_FILE` reruns it."]
    _table(config, "", lines)
    _table(config.learner.options, "learner", lines, "[learner]", (("kind", config.learner.kind),))
    for op in config.operators:
        _table(op.options, "operators", lines, "[[operators]]", (("kind", op.kind),))
    return "\n".join(lines) + "\n"


def _options_dict(stage: Stage) -> dict[str, Any]:
    return {"kind": stage.kind, **dataclasses.asdict(stage.options)}


def to_dict(config: PipelineConfig) -> dict[str, Any]:
    """Plain nested dict (checkpoint metadata, W&B config); operators keyed "0", "1"..."""
    plain = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    out: dict[str, Any] = {}
    for name, value in plain.items():
        if name == "learner":
            out[name] = _options_dict(value)
        elif name == "operators":
            out[name] = {str(i): _options_dict(op) for i, op in enumerate(value)}
        else:
            out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out
