"""TD losses and targets, hand-computed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.stages.learners.losses import huber, iterated_td_losses, l2, online_and_source_heads, td_targets


def test_l2_is_the_unhalved_square():
    np.testing.assert_allclose(l2(jnp.asarray([-3.0, 0.5])), [9.0, 0.25])


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    errors = jnp.asarray([-3.0, -1.0, 0.5, 2.0])
    np.testing.assert_allclose(huber(errors), [2.5, 0.5, 0.125, 1.5])
    assert float(huber(jnp.asarray(3.0), delta=2.0)) == pytest.approx(0.5 * 4 + 2 * 1)


def test_td_targets_take_the_max_and_stop_gradients():
    reward = jnp.asarray([1.0, 2.0])
    discount = jnp.asarray([0.5, 0.0])
    next_values = jnp.asarray([[[1.0, 4.0]], [[9.0, 3.0]]])  # (B=2, H=1, A=2)
    np.testing.assert_allclose(td_targets(reward, discount, next_values), [[3.0], [2.0]])
    grad = jax.grad(lambda v: td_targets(reward, discount, v).sum())(next_values)
    assert float(jnp.abs(grad).max()) == 0.0


def test_iterated_losses_pick_the_taken_action_per_head():
    q = jnp.asarray([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])  # (B=2, H=2, A=2)
    action = jnp.asarray([1, 0])
    targets = jnp.asarray([[0.0, 1.0], [5.0, 10.0]])
    # head 0: errors (2-0, 5-5) -> (4 + 0) / 2; head 1: (4-1, 7-10) -> (9 + 9) / 2
    np.testing.assert_allclose(iterated_td_losses(q, action, targets), [2.0, 9.0])


def test_online_and_source_heads():
    assert online_and_source_heads(1) == (slice(0, 1), slice(0, 1))
    assert online_and_source_heads(4) == (slice(1, 4), slice(0, 3))
