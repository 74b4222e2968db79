"""DQN's hard target update: every `period` environment steps, target <- online."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.q_learner import LearnerState
from sparseq.stages.operators.base import Operator, period_crossed


class TargetSync(Operator):
    """Copies the acting online member into the target network every `period` steps,
    and resets the per-member loss sums of the target period."""

    period: int = eqx.field(static=True)

    def __call__(self, state, learner_state: LearnerState, steps_before: Array, steps_after: Array):
        if learner_state.target is None:
            raise ValueError("TargetSync needs a learner with target='network'")
        due = period_crossed(self.period, steps_before, steps_after)

        def sync(ls: LearnerState) -> LearnerState:
            return eqx.tree_at(
                lambda s: (s.target, s.loss_sums),
                ls,
                (select_member(ls.online, ls.acting_member), jnp.zeros_like(ls.loss_sums)),
            )

        learner_state = jax.lax.cond(due, sync, lambda ls: ls, learner_state)
        return state, learner_state, {"target_updated": due}
