"""A dataclass view of a resolved PipelineConfig for tyro's `--help`: the learner's and
every operator's options become sections of their own, so the help lists every key of
the pipeline with its value, under the flag that overrides it."""

import dataclasses
from typing import Any

from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.stage import operator_key


def _with_kind(stage: Any, name: str) -> tuple[type, Any]:
    """A dataclass `kind` + the stage's options, and its instance."""
    options = stage.options
    base = type(options)
    # A subclass of the options class, so tyro finds the options' own field docs.
    cls = dataclasses.make_dataclass(
        name, [("kind", str, dataclasses.field(default=stage.kind))], bases=(base,), frozen=True
    )
    own_doc = base.__doc__ and not base.__doc__.startswith(f"{base.__name__}(")
    cls.__doc__ = f"{stage.kind} ({base.__name__})" + (f": {base.__doc__.strip()}" if own_doc else "")
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return cls, cls(kind=stage.kind, **values)


def operator_labels(config: PipelineConfig) -> list[str]:
    """The flag section of each operator: its kind when unique, else its index."""
    kinds = [op.kind for op in config.operators]
    return [operator_key(kinds, i).split(".", 1)[1] for i in range(len(kinds))]


def help_view(config: PipelineConfig) -> tuple[type, Any]:
    fields, values = [], {}
    for f in dataclasses.fields(config):
        if f.name == "learner":
            cls, value = _with_kind(config.learner, "Learner")
        elif f.name == "operators":
            op_fields = []
            for label, op in zip(operator_labels(config), config.operators):
                op_cls, op_value = _with_kind(op, f"Operator_{label.replace(':', '_')}")
                op_fields.append((label, op_cls, dataclasses.field(default=op_value)))
            cls = dataclasses.make_dataclass("Operators", op_fields, frozen=True)
            cls.__doc__ = "The operators in the order they run (--operators.KIND.KEY or --operators.INDEX.KEY)."
            value = cls()
        else:
            cls, value = f.type, getattr(config, f.name)
        fields.append((f.name, cls, dataclasses.field(default=value)))
        values[f.name] = value
    view = dataclasses.make_dataclass("Pipeline", fields, frozen=True)
    return view, view(**values)
