"""The operator protocol.

An operator is an Equinox module with
    init(learner_state) -> operator_state
    __call__(operator_state, learner_state, steps_before, steps_after)
        -> operator_state, learner_state, metrics
where steps are environment-step counters before and after the current iteration.
Operators gate themselves (usually on a period with `lax.cond`), so the pipeline calls
every operator at every iteration with no Python-side branching. `init` raises
ValueError (one line) when the learner lacks what the operator needs; pipeline files
report it against the operator's entry.

Composition rules are declared, not coded in the builder:
- `owns`: roles only one operator of a pipeline may play per value sub-state
  ("target_update": what the target network becomes; "masks": who sets the sparsity
  masks; "heads": the iS-QL window shift). A second owner of a role on the same value
  state is an error; an actor's masks and a critic's masks have one owner each.
  `roles(options)` gives them for one configuration (an option may drop a role).
- `precedes`: roles whose owner must come later in the list (PolyPrune prunes before
  the target update, so a synced target is the freshly pruned network).

Value-network operators (`ValueOperator`) act on one `ValueState` of the learner state,
named by their `on` option ("" = the learner's own), so they serve every learner.

Pipeline files build operators with `from_options(options, context)` from the
dataclass `Options` declared next to the operator; an operator without one gets an
options dataclass made from its static fields (see sparseq.pipeline.stage).
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import equinox as eqx
from jax import Array

from sparseq.stages.learners.value_state import ValueState, value_state_of, with_value_state
from sparseq.stages.options import StageOptions


def period_crossed(period: int, steps_before: Array, steps_after: Array) -> Array:
    """True when a multiple of `period` lies in (steps_before, steps_after]."""
    return (steps_after // period) > (steps_before // period)


class Operator(eqx.Module):
    owns: ClassVar[tuple[str, ...]] = ()
    precedes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def roles(cls, options: Any) -> tuple[str, ...]:
        """The roles this operator plays with `options` (its class's `owns` unless an
        option changes them)."""
        return cls.owns

    def owned_roles(self) -> tuple[str, ...]:
        """The roles of this built operator."""
        return type(self).owns

    def init(self, learner_state: Any) -> Any:
        return ()

    def __call__(
        self, state: Any, learner_state: Any, steps_before: Array, steps_after: Array
    ) -> tuple[Any, Any, dict[str, Array]]:
        raise NotImplementedError


@dataclass(frozen=True)
class ValueOperatorOptions(StageOptions):
    """Options every value-network operator has."""

    on: str = ""
    """The learner's value sub-state to act on ("" = its own)."""


def scoped_metrics(metrics: dict[str, Array], on: str, learner_state: Any) -> dict[str, Array]:
    """Metrics of an operator on a value state other than the learner's default one get
    its name in front ("actor/sparsity/overall"), so two operators of one kind on the
    critic and on the actor do not overwrite each other's figures."""
    if not on or on == getattr(learner_state, "default_value", ""):
        return metrics
    return {f"{on}/{name}": value for name, value in metrics.items()}


class ValueOperator(Operator):
    """An operator over one value sub-state: subclasses write `init_value` and `apply`
    on the ValueState; `on` says which one ("" = the learner's own)."""

    on: str = eqx.field(static=True, default="", kw_only=True)

    def init(self, learner_state: Any) -> Any:
        values = value_state_of(learner_state, self.on)
        self.check(values)
        return self.init_value(values)

    def check(self, values: ValueState) -> None:
        """Raises ValueError (one line) when `values` lacks what the operator needs;
        run at init and at trace time, so a hand-built pipeline is checked too."""

    def init_value(self, values: ValueState) -> Any:
        return ()

    def __call__(
        self, state: Any, learner_state: Any, steps_before: Array, steps_after: Array
    ) -> tuple[Any, Any, dict[str, Array]]:
        values = value_state_of(learner_state, self.on)
        self.check(values)
        state, values, metrics = self.apply(state, values, steps_before, steps_after)
        return state, with_value_state(learner_state, values, self.on), scoped_metrics(metrics, self.on, learner_state)

    def apply(
        self, state: Any, values: ValueState, steps_before: Array, steps_after: Array
    ) -> tuple[Any, ValueState, dict[str, Array]]:
        raise NotImplementedError
