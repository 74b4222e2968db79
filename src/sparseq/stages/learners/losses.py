"""TD losses as small pure functions (rlax style).

Shapes: B = batch, H = heads of the online network, A = actions.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

ElementLoss = Callable[[Array], Array]


def l2(td_error: Array) -> Array:
    """Squared error, not halved: mean over the batch of (Q - y)^2."""
    return jnp.square(td_error)


def huber(td_error: Array, delta: float = 1.0) -> Array:
    abs_error = jnp.abs(td_error)
    quadratic = jnp.minimum(abs_error, delta)
    return 0.5 * jnp.square(quadratic) + delta * (abs_error - quadratic)


def td_targets(reward: Array, discount: Array, next_values: Array) -> Array:
    """reward, discount: (B,); next_values: (B, H', A) -> (B, H') targets, no gradient."""
    bootstrap = jnp.max(next_values, axis=-1)
    return jax.lax.stop_gradient(reward[:, None] + discount[:, None] * bootstrap)


def double_td_targets(reward: Array, discount: Array, next_values: Array, selection_values: Array) -> Array:
    """Double DQN targets: the bootstrap action of each head is the argmax of
    `selection_values` (the online network at s'), valued by `next_values` (the target
    network at s').

    reward, discount: (B,); next_values, selection_values: (B, H', A) -> (B, H'), no
    gradient. With selection_values = next_values this is `td_targets`.
    """
    action = jnp.argmax(selection_values, axis=-1)  # (B, H')
    bootstrap = jnp.take_along_axis(next_values, action[..., None], axis=-1)[..., 0]
    return jax.lax.stop_gradient(reward[:, None] + discount[:, None] * bootstrap)


def iterated_td_losses(q_values: Array, action: Array, targets: Array, element_loss: ElementLoss = l2) -> Array:
    """Per-head TD losses.

    Args:
        q_values: (B, H', A) values of the heads being trained at s.
        action: (B,) int32 actions taken.
        targets: (B, H') regression targets, head h of q_values regresses on column h.
    Returns:
        (H',) batch-mean loss of each trained head.
    """
    chosen = jnp.take_along_axis(q_values, action[:, None, None], axis=-1)[..., 0]
    return jnp.mean(element_loss(chosen - targets), axis=0)


def online_and_source_heads(num_heads: int) -> tuple[slice, slice]:
    """Which heads are trained and which heads give their bootstrap values.

    One head: head 0 regresses on the bootstrap source's head 0 (DQN, TF-DQN).
    H > 1 heads (iterated Q-learning): head k regresses on source head k - 1 for
    k = 1..H-1, so head 0 is never trained.
    """
    if num_heads == 1:
        return slice(0, 1), slice(0, 1)
    return slice(1, num_heads), slice(0, num_heads - 1)


def cql_gaps(q_values: Array, action: Array) -> Array:
    """CQL(H)'s regulariser per head: how far the soft maximum over actions sits above
    the dataset action's value (Kumar et al. 2020, the discrete form).

    Args:
        q_values: (B, H', A) values of the trained heads at s.
        action: (B,) int32 dataset actions.
    Returns:
        (H',) batch means of logsumexp_a Q(s, a) - Q(s, a_data), each >= 0.
    """
    chosen = jnp.take_along_axis(q_values, action[:, None, None], axis=-1)[..., 0]
    return jnp.mean(jax.nn.logsumexp(q_values, axis=-1) - chosen, axis=0)
