"""Configuration errors: one line naming the source, the key path and the value."""

from typing import Any


class ConfigError(Exception):
    """A bad pipeline file, preset or flag.

    str(error) is one line: "SOURCE: KEY = VALUE: REASON" (parts that do not apply
    are left out), suitable for printing without a traceback.
    """

    def __init__(self, source: str, reason: str, key: str = "", value: Any = None, *, has_value: bool = False):
        self.source = source
        self.key = key
        self.value = value
        self.reason = reason
        self.has_value = has_value or value is not None
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.source]
        if self.key:
            parts.append(f"{self.key} = {self.value!r}" if self.has_value else self.key)
        parts.append(self.reason)
        return ": ".join(parts)


class CheckpointError(Exception):
    """A checkpoint that cannot be read or used (one-line message)."""
