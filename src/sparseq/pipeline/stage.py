"""Stages named in pipeline files: a kind and its options.

`Stage(kind, options)` is how a pipeline file (and a Python `PipelineConfig`) names a
learner or an operator. The kind is a registered name ("target_sync", see
sparseq.pipeline.registry) or `module:Class` of the user's own. Options are the
stage class's `Options` dataclass; a class without one gets a dataclass made from its
static fields with defaults, and is built as `Class(**options)`. A class may define
`from_options(options, context)` to build itself from its options and the pipeline
(what the collector observes, total steps, the built learner).
"""

import dataclasses
import functools
import typing
from typing import Any

import equinox as eqx

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.options import LearnerOptions
from sparseq.stages.options import StageOptions


@dataclasses.dataclass(frozen=True, init=False)
class Stage:
    """A learner or operator of a pipeline: `kind` and its options.

    `options` is the kind's options dataclass, a dict of its keys (checked and typed
    when the configuration is validated) or None for the defaults. Attribute access
    falls through to the options (`config.learner.target`), and keyword arguments
    change options, so `dataclasses.replace(config.learner, warmup=10)` works.
    """

    kind: str
    options: Any = None

    def __init__(self, kind: str, options: Any = None, **changes: Any):
        if changes:
            if options is None or isinstance(options, dict):
                options = {**(options or {}), **changes}
            else:
                options = dataclasses.replace(options, **changes)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "options", options)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        options = object.__getattribute__(self, "options")
        try:
            return getattr(options, name)
        except AttributeError:
            kind = object.__getattribute__(self, "kind")
            raise AttributeError(f"stage {kind!r} has no option {name!r}") from None


def operator_key(kinds: list, index: int) -> str:
    """The key path of operator `index` in errors and flags: `operators.KIND` when the
    pipeline has one operator of that kind, else `operators.INDEX` (0-based)."""
    kind = kinds[index]
    unique = isinstance(kind, str) and ":" not in kind and kinds.count(kind) == 1
    return f"operators.{kind if unique else index}"


def _static_fields(cls: type) -> list[dataclasses.Field]:
    fields = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("static", False) and f.init:
            fields.append(f)
    return fields


@functools.cache
def options_class(cls: type, role: str) -> type:
    """The options dataclass of stage class `cls` (`role` "learner" or "operator")."""
    declared = getattr(cls, "Options", None)
    if declared is not None:
        if not dataclasses.is_dataclass(declared):
            raise TypeError(f"{cls.__name__}.Options must be a dataclass")
        if role == "learner" and not issubclass(declared, LearnerOptions):
            raise TypeError(f"{cls.__name__}.Options must extend sparseq.stages.learners.options.LearnerOptions")
        return declared
    hints = typing.get_type_hints(cls)
    base = LearnerOptions if role == "learner" else StageOptions
    inherited = {f.name for f in dataclasses.fields(base)} if dataclasses.is_dataclass(base) else set()
    spec = []
    for f in _static_fields(cls):
        if f.name in inherited:
            continue
        if f.default is not dataclasses.MISSING:
            spec.append((f.name, hints.get(f.name, Any), dataclasses.field(default=f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            spec.append((f.name, hints.get(f.name, Any), dataclasses.field(default_factory=f.default_factory)))
        else:
            spec.append((f.name, hints.get(f.name, Any)))
    # Required fields first: dataclasses want them before the ones with defaults.
    spec.sort(key=lambda item: len(item) == 3)
    return dataclasses.make_dataclass(f"{cls.__name__}Options", spec, bases=(base,), frozen=True)


def build_stage(cls: type, options: Any, context: BuildContext) -> eqx.Module:
    """The stage object of class `cls` built from its options."""
    make = getattr(cls, "from_options", None)
    if make is not None:
        return make(options, context)
    names = {f.name for f in _static_fields(cls)}
    return cls(**{k: v for k, v in dataclasses.asdict(options).items() if k in names})
