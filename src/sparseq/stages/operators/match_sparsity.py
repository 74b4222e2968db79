"""Keeps one network as sparse as another: EauDeSAC prunes the actor to the selected
critic's sparsity, so the whole agent shrinks at the pace the critic selection sets.

Every `period` environment steps, when the overall sparsity of the source value
state's acting member (the critic the selection picked) exceeds what was last applied,
every member of the operator's own value state (`on`, e.g. the actor) is magnitude-
pruned to it. Sparsity therefore never decreases, and a dense actor is one pipeline
line away (leave the operator out).
"""

from dataclasses import dataclass
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.value_state import ValueState, value_state_of, with_value_state
from sparseq.stages.operators.base import ValueOperator, ValueOperatorOptions, period_crossed, scoped_metrics
from sparseq.stages.operators.poly_prune import prune_members
from sparseq.stages.options import Rule
from sparseq.stages.sparsity import Criterion, sparsity_stats


class MatchSparsityState(eqx.Module):
    applied: Array  # () float32: the sparsity last applied
    sparsity: dict[str, Array]  # "overall" and per-layer sparsity of member 0


@dataclass(frozen=True)
class MatchSparsityOptions(ValueOperatorOptions):
    on: str = "actor"
    """The value state that is pruned."""
    source: str = "critic"
    """The value state whose acting member's sparsity is followed."""
    period: int = 1
    """Environment steps between checks."""
    criterion: Literal["layer", "global"] = "layer"

    def rules(self) -> list[Rule]:
        return [
            ("period", self.period >= 1, "must be >= 1"),
            ("source", self.source != self.on, f"must name another value state than on ({self.on!r})"),
        ]


class MatchSparsity(ValueOperator):
    """Attributes:
    source: the value sub-state followed (e.g. "critic").
    period: environment steps between checks.
    criterion: "layer" or "global" magnitude pruning.

    Metrics: "<on>/sparsity/overall" and per layer (member 0 of `on`).
    """

    owns = ("masks",)
    Options = MatchSparsityOptions

    source: str = eqx.field(static=True, default="critic")
    period: int = eqx.field(static=True, default=1)
    criterion: Criterion = eqx.field(static=True, default="layer")

    @classmethod
    def from_options(cls, options: MatchSparsityOptions, context: BuildContext) -> "MatchSparsity":
        return cls(source=options.source, period=options.period, criterion=options.criterion, on=options.on)

    def init(self, learner_state: Any) -> MatchSparsityState:
        values = value_state_of(learner_state, self.on)
        source = value_state_of(learner_state, self.source)
        if values.masks is None:
            raise ValueError(f"matching sparsity needs masks on {self.on!r} (e.g. learner.actor_masked = true)")
        if source.masks is None:
            raise ValueError(f"matching sparsity needs masks on the source {self.source!r} (learner.masked = true)")
        return MatchSparsityState(
            applied=jnp.zeros((), jnp.float32), sparsity=sparsity_stats(select_member(values.masks, 0))
        )

    def __call__(
        self, state: MatchSparsityState, learner_state: Any, steps_before: Array, steps_after: Array
    ) -> tuple[MatchSparsityState, Any, dict[str, Array]]:
        values = value_state_of(learner_state, self.on)
        source = value_state_of(learner_state, self.source)

        def follow(operands: tuple[MatchSparsityState, ValueState]) -> tuple[MatchSparsityState, ValueState]:
            # Counting the source's mask only on the check steps: not on every iteration.
            wanted = sparsity_stats(select_member(source.masks, source.acting_member))["overall"]

            def prune(operands: tuple[MatchSparsityState, ValueState]) -> tuple[MatchSparsityState, ValueState]:
                vs = prune_members(operands[1], wanted, self.criterion)
                return MatchSparsityState(applied=wanted, sparsity=sparsity_stats(select_member(vs.masks, 0))), vs

            return jax.lax.cond(wanted > operands[0].applied, prune, lambda ops: ops, operands)

        due = period_crossed(self.period, steps_before, steps_after)
        state, values = jax.lax.cond(due, follow, lambda operands: operands, (state, values))
        metrics = {f"sparsity/{name}": value for name, value in state.sparsity.items()}
        return state, with_value_state(learner_state, values, self.on), scoped_metrics(metrics, self.on, learner_state)
