"""Values as `sparseq train` flags: the one form in which a sweep hands overrides to
the pipeline loader (the driver to validate them, the worker to load its run)."""

from typing import Any


def to_flag(key: str, value: Any) -> str:
    """`--key=VALUE` as the loader parses it: lists comma-separated (so one argument
    always holds one key), booleans as true/false."""
    if isinstance(value, list | tuple):
        return f"--{key}=" + ",".join(text(v) for v in value)
    return f"--{key}={text(value)}"


def text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
