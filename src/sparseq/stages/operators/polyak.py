"""Soft (Polyak) target update: every `period` environment steps,
target <- tau * online + (1 - tau) * target."""

from dataclasses import dataclass

import equinox as eqx
import jax
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.value_state import ValueState
from sparseq.stages.operators.base import ValueOperator, ValueOperatorOptions, period_crossed
from sparseq.stages.options import Rule


@dataclass(frozen=True)
class PolyakOptions(ValueOperatorOptions):
    tau: float = 0.005
    """Weight of the online network in each soft update (1 = a hard copy)."""
    period: int = 1
    """Environment steps between soft updates."""

    def rules(self) -> list[Rule]:
        return [
            ("tau", 0 < self.tau <= 1, "must be in (0, 1]"),
            ("period", self.period >= 1, "must be >= 1"),
        ]


def polyak_average(online: object, target: object, tau: float) -> object:
    """tau * online + (1 - tau) * target on the floating-point array leaves; every
    other leaf is the target's."""

    def blend(o, t):
        if eqx.is_inexact_array(t):
            return (tau * o + (1 - tau) * t).astype(t.dtype)
        return t

    return jax.tree.map(blend, online, target)


class Polyak(ValueOperator):
    """Moves the target network towards the acting online member every `period` steps.

    It owns the target update, so it replaces target_sync (a pipeline has one or the
    other). Unlike target_sync it leaves `loss_sums` alone: those sums belong to the
    target period of the selection operators (prune_select), which a soft update does
    not delimit. With a masked learner the target is a blend, so it is not pruned
    exactly like the online member.
    """

    owns = ("target_update",)
    Options = PolyakOptions

    tau: float = eqx.field(static=True, default=0.005)
    period: int = eqx.field(static=True, default=1)

    @classmethod
    def from_options(cls, options: PolyakOptions, context: BuildContext) -> "Polyak":
        return cls(tau=options.tau, period=options.period, on=options.on)

    def check(self, values: ValueState) -> None:
        if values.target is None:
            raise ValueError("a polyak target update needs a learner with target='network' (a separate target network)")

    def apply(self, state, values: ValueState, steps_before: Array, steps_after: Array):
        due = period_crossed(self.period, steps_before, steps_after)

        def soft_update(vs: ValueState) -> ValueState:
            online = select_member(vs.online, vs.acting_member)
            return eqx.tree_at(lambda s: s.target, vs, polyak_average(online, vs.target, self.tau))

        values = jax.lax.cond(due, soft_update, lambda vs: vs, values)
        return state, values, {"target_updated": due}
