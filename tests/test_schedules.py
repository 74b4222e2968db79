"""Epsilon-greedy schedule: hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.pipeline.compose import Exploration
from sparseq.stages.schedules import linear_epsilon


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 1.0),  # warm-up: start value
        (499, 1.0),
        (500, 1.0),  # decay starts at the end of warm-up
        (750, 1.0 - 0.99 * 0.25),  # a quarter of the way: 0.7525
        (1000, 0.505),  # half way
        (1500, 0.01),  # end of decay
        (10_000, 0.01),  # stays at the end value
    ],
)
def test_linear_epsilon_values(step, expected):
    value = linear_epsilon(jnp.asarray(step), start=1.0, end=0.01, decay_steps=1000, warmup=500)
    assert float(value) == pytest.approx(expected, abs=1e-6)


def test_linear_epsilon_without_warmup_and_increasing_schedule():
    steps = jnp.arange(0, 6)
    values = linear_epsilon(steps, start=0.0, end=0.5, decay_steps=4)
    np.testing.assert_allclose(values, [0.0, 0.125, 0.25, 0.375, 0.5, 0.5], atol=1e-6)


def test_zero_decay_steps_jumps_to_end_after_warmup():
    values = linear_epsilon(jnp.asarray([9, 10, 11]), start=1.0, end=0.1, decay_steps=0, warmup=10)
    np.testing.assert_allclose(values, [1.0, 1.0, 0.1], atol=1e-6)


def test_exploration_stage_uses_its_fields():
    exploration = Exploration(start=0.8, end=0.2, decay_steps=100)
    assert float(exploration.epsilon(jnp.asarray(150), warmup=100)) == pytest.approx(0.5)
    assert float(exploration.epsilon(jnp.asarray(50), warmup=100)) == pytest.approx(0.8)
