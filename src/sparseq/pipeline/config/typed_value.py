"""One assignment's value, checked (file) or parsed (flag) against its type hint."""

from typing import Any

from sparseq.pipeline.config.coerce import coerce
from sparseq.pipeline.config.errors import ConfigError

CLI = "command line"


def typed_value(hint: Any, dotted: str, value: Any, source: str) -> Any:
    """`value` of key `dotted` as `hint`; a one-line ConfigError naming the source."""
    if source == CLI and value is True and hint is not bool:
        raise ConfigError(source, "needs a value", f"--{dotted.replace('_', '-')}")
    try:
        return coerce(hint, value, from_text=source == CLI)
    except ValueError as error:
        raise ConfigError(source, str(error), dotted, value) from None
