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

from dataclasses import dataclass
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.value_state import ValueState
from sparseq.stages.operators.base import ValueOperator, ValueOperatorOptions
from sparseq.stages.options import Rule
from sparseq.stages.sparsity import Criterion, apply_masks, mask_optimizer_state, prune_to_sparsity, sparsity_stats


def cubic_sparsity(step: Array | int, *, start_step: int, end_step: int, final_sparsity: float) -> Array:
    """s(step) of the cubic schedule: 0 up to start_step, s_final from end_step on."""
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - start_step) / (end_step - start_step), 0.0, 1.0)
    return final_sparsity * (1.0 - (1.0 - progress) ** 3)


def prune_members(ls: ValueState, sparsity: Array, criterion: Criterion) -> ValueState:
    """Every member's masks recomputed to `sparsity` (never reviving a weight); weights
    and optimizer moments masked."""
    masks = eqx.filter_vmap(lambda net, m: prune_to_sparsity(net, m, sparsity, criterion))(ls.online, ls.masks)
    return eqx.tree_at(
        lambda s: (s.online, s.opt_state, s.masks),
        ls,
        (apply_masks(ls.online, masks), mask_optimizer_state(ls.opt_state, masks), masks),
    )


class PolyPruneState(eqx.Module):
    applied: Array  # () float32: the scheduled sparsity of the last recomputation
    seen_updates: Array  # () int32: learner gradient steps at the last call
    sparsity: dict[str, Array]  # "overall" and per-layer sparsity of online network 0


@dataclass(frozen=True)
class PolyPruneOptions(ValueOperatorOptions):
    """s(t) = s_final (1 - (1 - p)^3) with p going from 0 at `start` to 1 at `end`
    (fractions of run.total_steps)."""

    start: float = 0.2
    end: float = 0.8
    final_sparsity: float = 0.95
    """s_final in [0, 1)."""
    every: int = 1_000
    """Gradient steps between mask recomputations."""
    criterion: Literal["layer", "global"] = "layer"

    def rules(self) -> list[Rule]:
        return [
            ("start", 0 <= self.start <= 1, "must be in [0, 1] (a fraction of training)"),
            ("end", 0 <= self.end <= 1, "must be in [0, 1] (a fraction of training)"),
            ("start", self.start < self.end, f"must be < end ({self.end})"),
            ("final_sparsity", 0 <= self.final_sparsity < 1, "must be in [0, 1)"),
            ("every", self.every >= 1, "must be >= 1 (gradient steps)"),
        ]


class PolyPrune(ValueOperator):
    """Attributes:
    start_step, end_step: environment steps where the schedule starts and ends.
    final_sparsity: s_final in [0, 1).
    every: gradient steps between mask recomputations.
    criterion: "layer" (each layer to s(t)) or "global" (s(t) over all weights).

    Metrics: "sparsity/overall", "sparsity/<layer>" (online network 0), and
    "pruned" () bool (masks recomputed this iteration).
    """

    owns = ("masks",)
    precedes = ("target_update",)  # a synced target is the freshly pruned network
    Options = PolyPruneOptions

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

    @classmethod
    def from_options(cls, options: PolyPruneOptions, context: BuildContext) -> "PolyPrune":
        total = context.total_steps
        return cls(
            start_step=round(options.start * total),
            end_step=round(options.end * total),
            final_sparsity=options.final_sparsity,
            every=options.every,
            criterion=options.criterion,
            on=options.on,
        )

    def schedule(self, step: Array | int) -> Array:
        return cubic_sparsity(
            step, start_step=self.start_step, end_step=self.end_step, final_sparsity=self.final_sparsity
        )

    def init_value(self, learner_state: ValueState) -> PolyPruneState:
        if learner_state.masks is None:
            raise ValueError("pruning needs a masked learner (learner.masked = true)")
        return PolyPruneState(
            applied=jnp.zeros((), jnp.float32),
            # A copy: the runner donates the whole state, and one buffer must not appear twice.
            seen_updates=jnp.array(learner_state.updates, copy=True),
            sparsity=sparsity_stats(select_member(learner_state.masks, 0)),
        )

    def prune(self, ls: ValueState, sparsity: Array) -> ValueState:
        return prune_members(ls, sparsity, self.criterion)

    def apply(
        self, state: PolyPruneState, learner_state: ValueState, steps_before: Array, steps_after: Array
    ) -> tuple[PolyPruneState, ValueState, dict[str, Array]]:
        scheduled = self.schedule(steps_after)
        crossed = (learner_state.updates // self.every) > (state.seen_updates // self.every)
        due = crossed & (scheduled > state.applied)

        def update(operands: tuple[PolyPruneState, ValueState]) -> tuple[Any, ValueState]:
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
