"""DQN's hard target update: every `period` environment steps, target <- online."""

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.value_state import ValueState
from sparseq.stages.operators.base import ValueOperator, ValueOperatorOptions, period_crossed
from sparseq.stages.options import Rule


@dataclass(frozen=True)
class TargetSyncOptions(ValueOperatorOptions):
    period: int = 200
    """Environment steps between hard target updates."""

    def rules(self) -> list[Rule]:
        return [("period", self.period >= 1, "must be >= 1")]


class TargetSync(ValueOperator):
    """Copies the acting online member into the target network every `period` steps,
    and resets the per-member loss sums of the target period."""

    owns = ("target_update",)
    Options = TargetSyncOptions

    period: int = eqx.field(static=True)

    @classmethod
    def from_options(cls, options: TargetSyncOptions, context: BuildContext) -> "TargetSync":
        return cls(period=options.period, on=options.on)

    def check(self, values: ValueState) -> None:
        if values.target is None:
            raise ValueError("a target sync needs a learner with target='network' (a separate target network)")

    def apply(self, state, values: ValueState, steps_before: Array, steps_after: Array):
        due = period_crossed(self.period, steps_before, steps_after)

        def sync(vs: ValueState) -> ValueState:
            return eqx.tree_at(
                lambda s: (s.target, s.loss_sums),
                vs,
                (select_member(vs.online, vs.acting_member), jnp.zeros_like(vs.loss_sums)),
            )

        values = jax.lax.cond(due, sync, lambda vs: vs, values)
        return state, values, {"target_updated": due}
