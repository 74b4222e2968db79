"""iS-QL's window shift: every `period` environment steps, head_i <- head_{i+1}.

The online network's output layer holds H = K + 1 heads [Q_bar_0, Q_1, ..., Q_K]
(rows h*A .. (h+1)*A - 1 of the last kernel and bias are head h). The shift moves
each head one slot down (head 0, the shared target, takes head 1's weights) and
leaves head K as it is, so head K - 1 and head K start the new window equal.

Nothing else changes. As in the authors' code, the optimizer state is NOT shifted:
Adam's moments stay with their positions. Head 0's slice never receives a gradient,
so its moments stay exactly zero and it never moves between shifts.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.learners.q_learner import LearnerState
from sparseq.stages.networks.q_network import QNetwork
from sparseq.stages.operators.base import Operator, period_crossed


def shift_rows(values: Array, num_actions: int) -> Array:
    """Shifts head blocks of rows on axis 1 (axis 0 is the population).

    values: (P, H * A, ...) -> (P, H * A, ...) with block h <- block h + 1 for
    h < H - 1 and the last block unchanged.
    """
    a = num_actions
    return jnp.concatenate([values[:, a:], values[:, -a:]], axis=1)


def shift_network_heads(network: QNetwork) -> QNetwork:
    """One `tree_at` on the last layer's kernel and bias of a stacked network."""
    a = network.head.num_actions
    linear = network.head.linear
    return eqx.tree_at(
        lambda n: (n.head.linear.weight, n.head.linear.bias),
        network,
        (shift_rows(linear.weight, a), shift_rows(linear.bias, a)),
    )


def shift_head_masks(masks: Any, num_actions: int) -> Any:
    """Shifts the last layer's masks with the weights (sparse iS-QL), so a moved head
    keeps its own zero pattern; `masks` is a pytree like the network, None where a
    parameter has no mask, or None altogether."""
    head = getattr(getattr(masks, "head", None), "linear", None)
    if head is None:
        return masks
    pairs = [(lambda m: m.head.linear.weight, head.weight), (lambda m: m.head.linear.bias, head.bias)]
    for where, mask in pairs:
        if mask is not None:
            masks = eqx.tree_at(where, masks, shift_rows(mask, num_actions))
    return masks


class SharedTargetShift(Operator):
    """Attributes:
    period: T, environment steps between shifts.

    Shifts only once learning has begun (`updates > 0`): before the first gradient
    step the heads are untrained and shifting would only collapse them onto head K's
    initialisation (the authors also start target updates after the warm-up).
    Metrics: "heads_shifted" () bool.
    """

    period: int = eqx.field(static=True)

    def __call__(
        self, state: Any, learner_state: LearnerState, steps_before: Array, steps_after: Array
    ) -> tuple[Any, LearnerState, dict[str, Array]]:
        if learner_state.online.num_heads < 2:
            raise ValueError("SharedTargetShift needs a network with K + 1 >= 2 heads")
        due = period_crossed(self.period, steps_before, steps_after) & (learner_state.updates > 0)
        num_actions = learner_state.online.head.num_actions

        def shift(ls: LearnerState) -> LearnerState:
            return eqx.tree_at(
                lambda s: (s.online, s.masks),
                ls,
                (shift_network_heads(ls.online), shift_head_masks(ls.masks, num_actions)),
                is_leaf=lambda node: node is None,
            )

        # Cheap slice copies of the last layer only: no convolution inside this cond.
        learner_state = jax.lax.cond(due, shift, lambda ls: ls, learner_state)
        return state, learner_state, {"heads_shifted": due}
