"""PolyPruneQN's operator: gradual magnitude pruning on a cubic schedule (Zhu & Gupta
2017), the dense-to-sparse baseline of EauDeQN.

    s(t) = s_final * (1 - (1 - p)^3),  p = clip((t - t_start) / (t_end - t_start), 0, 1)

with t in environment steps. Masks are recomputed (lowest magnitudes pruned, per
layer or globally) whenever the learner crosses a multiple of `every` gradient steps
and s(t) exceeds the sparsity last applied; so the first recomputation after t_end
reaches s_final exactly and nothing changes after that. The learner re-applies the
masks after every optimizer step. Every member of the population is pruned to the
same sparsity.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.q_learner import LearnerState
from sparseq.stages.operators.base import Operator
from sparseq.stages.sparsity import Criterion, apply_masks, mask_optimizer_state, prune_to_sparsity, sparsity_stats


def cubic_sparsity(step: Array | int, *, start_step: int, end_step: int, final_sparsity: float) -> Array:
    """s(step) of the cubic schedule: 0 up to start_step, s_final from end_step on."""
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - start_step) / (end_step - start_step), 0.0, 1.0)
    return final_sparsity * (1.0 - (1.0 - progress) ** 3)


class PolyPruneState(eqx.Module):
    applied: Array  # () float32: the scheduled sparsity of the last recomputation
    seen_updates: Array  # () int32: learner gradient steps at the last call
    sparsity: dict[str, Array]  # "overall" and per-layer sparsity of online network 0


class PolyPrune(Operator):
    """Attributes:
    start_step, end_step: environment steps where the schedule starts and ends.
    final_sparsity: s_final in [0, 1).
    every: gradient steps between mask recomputations.
    criterion: "layer" (each layer to s(t)) or "global" (s(t) over all weights).

    Metrics: "sparsity/overall", "sparsity/<layer>" (online network 0), and
    "pruned" () bool (masks recomputed this iteration).
    """

    start_step: int = eqx.field(static=True)
    end_step: int = eqx.field(static=True)
    final_sparsity: float = eqx.field(static=True, default=0.95)
    every: int = eqx.field(static=True, default=1_000)
    criterion: Criterion = eqx.field(static=True, default="layer")

    def __check_init__(self):
        if not self.start_step < self.end_step:
            raise ValueError(f"PolyPrune needs start_step < end_step, got {self.start_step} >= {self.end_step}")
        if not 0 <= self.final_sparsity < 1:
            raise ValueError(f"PolyPrune needs 0 <= final_sparsity < 1, got {self.final_sparsity}")
        if self.every < 1:
            raise ValueError(f"PolyPrune needs every >= 1, got {self.every}")

    def schedule(self, step: Array | int) -> Array:
        return cubic_sparsity(
            step, start_step=self.start_step, end_step=self.end_step, final_sparsity=self.final_sparsity
        )

    def init(self, learner_state: LearnerState) -> PolyPruneState:
        if learner_state.masks is None:
            raise ValueError("PolyPrune needs a masked learner (QLearner(masked=True))")
        return PolyPruneState(
            applied=jnp.zeros((), jnp.float32),
            # A copy: the runner donates the whole state, and one buffer must not appear twice.
            seen_updates=jnp.array(learner_state.updates, copy=True),
            sparsity=sparsity_stats(select_member(learner_state.masks, 0)),
        )

    def prune(self, ls: LearnerState, sparsity: Array) -> LearnerState:
        """Every member's masks recomputed to `sparsity`; weights and moments masked."""
        masks = eqx.filter_vmap(lambda net, m: prune_to_sparsity(net, m, sparsity, self.criterion))(ls.online, ls.masks)
        return eqx.tree_at(
            lambda s: (s.online, s.opt_state, s.masks),
            ls,
            (apply_masks(ls.online, masks), mask_optimizer_state(ls.opt_state, masks), masks),
        )

    def __call__(
        self, state: PolyPruneState, learner_state: LearnerState, steps_before: Array, steps_after: Array
    ) -> tuple[PolyPruneState, LearnerState, dict[str, Array]]:
        scheduled = self.schedule(steps_after)
        crossed = (learner_state.updates // self.every) > (state.seen_updates // self.every)
        due = crossed & (scheduled > state.applied)

        def update(operands: tuple[PolyPruneState, LearnerState]) -> tuple[Any, LearnerState]:
            st, ls = operands
            ls = self.prune(ls, scheduled)
            st = PolyPruneState(
                applied=scheduled, seen_updates=st.seen_updates, sparsity=sparsity_stats(select_member(ls.masks, 0))
            )
            return st, ls

        # Sorting and masking only: no convolution runs inside this cond.
        state, learner_state = jax.lax.cond(due, update, lambda operands: operands, (state, learner_state))
        state = eqx.tree_at(lambda s: s.seen_updates, state, learner_state.updates)
        metrics = {"pruned": due, **{f"sparsity/{name}": value for name, value in state.sparsity.items()}}
        return state, learner_state, metrics
