"""iS-QL's window shift: every `period` environment steps, head_i <- head_{i+1}.

The online network's output layer holds H = K + 1 heads [Q_bar_0, Q_1, ..., Q_K]
(rows h*A .. (h+1)*A - 1 of the last kernel and bias are head h). The shift moves
each head one slot down (head 0, the shared target, takes head 1's weights) and
leaves head K as it is, so head K - 1 and head K start the new window equal.

Nothing else changes. As in the authors' code, the optimizer state is NOT shifted:
Adam's moments stay with their positions. Head 0's slice never receives a gradient,
so its moments stay exactly zero and it never moves between shifts.
"""

from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.value_state import ValueState
from sparseq.stages.networks.heads import MultiHeadLinear
from sparseq.stages.operators.base import ValueOperator, ValueOperatorOptions, period_crossed
from sparseq.stages.options import Rule


def shift_rows(values: Array, num_actions: int, axis: int = 1) -> Array:
    """Shifts head blocks of rows along `axis` (1 = after the population axis).

    values: (P, H * A, ...) -> (P, H * A, ...) with block h <- block h + 1 for
    h < H - 1 and the last block unchanged. A stacked critic's kernel (P, 2, H * A, F)
    shifts along axis -2 and its bias (P, 2, H * A) along -1.
    """
    a = num_actions
    size = values.shape[axis]
    upper = jax.lax.slice_in_dim(values, a, size, axis=axis)
    last = jax.lax.slice_in_dim(values, size - a, size, axis=axis)
    return jnp.concatenate([upper, last], axis=axis)


def _is_head(node: Any) -> bool:
    return isinstance(node, MultiHeadLinear)


def _shift_head(head: Any, num_actions: int) -> Any:
    """A MultiHeadLinear (or its mask, None where unmasked) with its rows shifted: the
    kernel's rows are axis -2, the bias's axis -1, whatever the stacking in front."""
    linear = head.linear
    pairs = [(lambda h: h.linear.weight, linear.weight, -2), (lambda h: h.linear.bias, linear.bias, -1)]
    for where, value, axis in pairs:
        if value is not None:
            head = eqx.tree_at(where, head, shift_rows(value, num_actions, axis), is_leaf=lambda x: x is None)
    return head


def heads_of(network: Any) -> list[MultiHeadLinear]:
    """The multi-head output layers of a (stacked) network: one for a Q-network, the
    twins' shared stacked one for a SAC critic."""
    return [node for node in jax.tree.leaves(network, is_leaf=_is_head) if _is_head(node)]


def shift_network_heads(network: Any) -> Any:
    """Every multi-head output layer of a stacked network shifted by one head."""
    return jax.tree.map(lambda n: _shift_head(n, n.num_actions) if _is_head(n) else n, network, is_leaf=_is_head)


def shift_head_masks(masks: Any, num_actions: int) -> Any:
    """Shifts the output layers' masks with the weights (sparse iS-QL), so a moved head
    keeps its own zero pattern; `masks` is a pytree like the network, None where a
    parameter has no mask, or None altogether."""
    if masks is None:
        return masks
    return jax.tree.map(
        lambda n: _shift_head(n, num_actions) if _is_head(n) else n, masks, is_leaf=lambda x: _is_head(x) or x is None
    )


@dataclass(frozen=True)
class SharedTargetShiftOptions(ValueOperatorOptions):
    period: int = 200
    """T, environment steps between window shifts (head_i <- head_{i+1}, i < K)."""

    def rules(self) -> list[Rule]:
        return [("period", self.period >= 1, "must be >= 1")]


class SharedTargetShift(ValueOperator):
    """Attributes:
    period: T, environment steps between shifts.

    Shifts only once learning has begun (`updates > 0`): before the first gradient
    step the heads are untrained and shifting would only collapse them onto head K's
    initialisation (the authors also start target updates after the warm-up).
    Metrics: "heads_shifted" () bool.
    """

    owns = ("heads",)
    Options = SharedTargetShiftOptions

    period: int = eqx.field(static=True)

    @classmethod
    def from_options(cls, options: SharedTargetShiftOptions, context: BuildContext) -> "SharedTargetShift":
        return cls(period=options.period, on=options.on)

    def check(self, values: ValueState) -> None:
        if not heads_of(values.online) or getattr(values.online, "num_heads", 1) < 2:
            raise ValueError("the window shift needs a network with K + 1 >= 2 heads (network.iterations >= 1)")
        if values.target is not None:
            raise ValueError("the shared target is head 0: the shift needs a learner with target='online'")

    def apply(
        self, state: Any, values: ValueState, steps_before: Array, steps_after: Array
    ) -> tuple[Any, ValueState, dict[str, Array]]:
        due = period_crossed(self.period, steps_before, steps_after) & (values.updates > 0)
        num_actions = heads_of(values.online)[0].num_actions

        def shift(vs: ValueState) -> ValueState:
            return eqx.tree_at(
                lambda s: (s.online, s.masks),
                vs,
                (shift_network_heads(vs.online), shift_head_masks(vs.masks, num_actions)),
                is_leaf=lambda node: node is None,
            )

        # Cheap slice copies of the last layer only: no convolution inside this cond.
        values = jax.lax.cond(due, shift, lambda vs: vs, values)
        return state, values, {"heads_shifted": due}
