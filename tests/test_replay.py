"""Uniform ring-buffer replay: in-place adds, n-step returns across termination vs
truncation, and sampling that never starts at envpool's auto-reset step."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.stages.replay import UniformReplay
from sparseq.types import Transition

GAMMA = 0.5  # powers of two keep every expected value exact
RESET_MARKER = 1000.0  # reward stored on auto-reset steps: it must never reach a sample

# One environment stream, t = 0..10: (reward, terminated, truncated, is_reset_step).
# t=2 terminates, t=3 is envpool's auto-reset step; t=5 is truncated (time limit),
# t=6 is the auto-reset step, whose stored observation is the truncated episode's last
# observation (the one to bootstrap from).
STREAM = [
    (1.0, False, False, False),
    (2.0, False, False, False),
    (4.0, True, False, False),
    (RESET_MARKER, False, False, True),
    (8.0, False, False, False),
    (16.0, False, True, False),
    (RESET_MARKER, False, False, True),
    (32.0, False, False, False),
    (64.0, False, False, False),
    (128.0, False, False, False),
    (256.0, False, False, False),
]

# start t -> (n-step reward, discount, index of the bootstrap observation), n = 3.
EXPECTED_3STEP = {
    0: (1 + 0.5 * 2 + 0.25 * 4, 0.0, 3),  # ends in termination: no bootstrap
    1: (2 + 0.5 * 4, 0.0, 3),
    2: (4.0, 0.0, 3),
    4: (8 + 0.5 * 16, 0.25, 6),  # truncation after 2 steps: bootstrap with gamma^2
    5: (16.0, 0.5, 6),  # truncation after 1 step: gamma^1
    7: (32 + 0.5 * 64 + 0.25 * 128, 0.125, 10),  # full window: gamma^3
}


def transition(t: int, num_envs: int = 1) -> Transition:
    reward, terminated, truncated, reset = STREAM[t]
    return Transition(
        obs=jnp.full((num_envs, 2), float(t)),  # observation t is [t, t]
        action=jnp.full((num_envs,), t % 3, jnp.int32),
        reward=jnp.full((num_envs,), reward),
        terminated=jnp.full((num_envs,), terminated),
        truncated=jnp.full((num_envs,), truncated),
        is_reset_step=jnp.full((num_envs,), reset),
    )


def filled(capacity: int, n_step: int = 3, num_envs: int = 1, batch_size: int = 32):
    replay = UniformReplay(capacity=capacity, batch_size=batch_size, num_envs=num_envs, n_step=n_step, gamma=GAMMA)
    state = replay.init((2,), jnp.float32)
    add = jax.jit(replay.add)
    for t in range(len(STREAM)):
        state = add(state, transition(t, num_envs))
    return replay, state


def gather_one(replay, state, t: int, env: int = 0):
    return jax.jit(replay.gather)(state, jnp.asarray([t], jnp.int32), jnp.asarray([env], jnp.int32))


@pytest.mark.parametrize("capacity", [16, 8])  # 8 slots: the ring has wrapped (t=8..10 overwrote t=0..2)
def test_n_step_targets_stop_at_termination_and_bootstrap_through_truncation(capacity):
    replay, state = filled(capacity)
    assert replay.slots == capacity
    oldest = max(len(STREAM) - capacity, 0)
    for t, (reward, discount, next_index) in EXPECTED_3STEP.items():
        if t < oldest:
            continue
        batch = gather_one(replay, state, t)
        assert float(batch.reward[0]) == pytest.approx(reward), t
        assert float(batch.discount[0]) == pytest.approx(discount), t
        assert float(batch.obs[0, 0]) == t
        assert int(batch.action[0]) == t % 3
        assert float(batch.next_obs[0, 0]) == next_index, t


def test_one_step_targets():
    replay, state = filled(16, n_step=1)
    expected = {0: (1.0, 0.5, 1), 2: (4.0, 0.0, 3), 5: (16.0, 0.5, 6), 9: (128.0, 0.5, 10)}
    for t, (reward, discount, next_index) in expected.items():
        batch = gather_one(replay, state, t)
        assert float(batch.reward[0]) == reward
        assert float(batch.discount[0]) == discount
        assert float(batch.next_obs[0, 0]) == next_index


def test_terminal_discount_is_zero_even_with_gamma_one():
    replay = UniformReplay(capacity=16, batch_size=1, num_envs=1, n_step=2, gamma=1.0)
    state = replay.init((2,), jnp.float32)
    for t in range(len(STREAM)):
        state = replay.add(state, transition(t))
    assert float(gather_one(replay, state, 1).discount[0]) == 0.0  # termination at t=2
    assert float(gather_one(replay, state, 4).discount[0]) == 1.0  # truncation at t=5


@pytest.mark.parametrize(("capacity", "valid"), [(16, {0, 1, 2, 4, 5, 7}), (8, {4, 5, 7})])
def test_sampling_is_uniform_over_valid_starts_and_never_an_auto_reset_step(capacity, valid):
    """Valid starts: stored, not an auto-reset step, and with their whole n-step window
    and bootstrap observation written (t <= newest - n)."""
    replay, state = filled(capacity)
    keys = jax.random.split(jax.random.key(0), 200)
    times, envs = jax.jit(jax.vmap(replay.sample_indices, in_axes=(None, 0)))(state, keys)
    batches = jax.jit(jax.vmap(replay.sample, in_axes=(None, 0)))(state, keys)
    assert set(np.asarray(envs).ravel().tolist()) == {0}
    assert float(jnp.max(batches.reward)) < RESET_MARKER  # no reward of a reset step
    counts = collections.Counter(np.asarray(times).ravel().tolist())
    assert set(counts) == valid
    total = sum(counts.values())
    for t in valid:
        assert counts[t] / total == pytest.approx(1 / len(valid), abs=0.02), (t, counts)


def test_streams_of_several_environments_are_independent():
    """Two streams: env 1 sees the stream shifted by one step, so its ends fall elsewhere."""
    replay = UniformReplay(capacity=32, batch_size=4, num_envs=2, n_step=3, gamma=GAMMA)
    state = replay.init((2,), jnp.float32)
    add = jax.jit(replay.add)
    for t in range(len(STREAM) - 1):
        a, b = transition(t), transition(t + 1)
        state = add(state, Transition(*(jnp.concatenate([x, y]) for x, y in zip(a, b))))
    # env 0 at t=1: 2 + 0.5 * 4, terminated; env 1 at t=1 holds STREAM[2]: 4, terminated.
    batch = jax.jit(replay.gather)(state, jnp.asarray([1, 1, 3]), jnp.asarray([0, 1, 1]))
    np.testing.assert_allclose(batch.reward, [4.0, 4.0, 8 + 0.5 * 16])
    np.testing.assert_allclose(batch.discount, [0.0, 0.0, 0.25])
    np.testing.assert_allclose(batch.next_obs[:, 0], [3.0, 3.0, 6.0])  # env 1 stores obs t+1
    assert int(replay.num_valid_starts(state)) == 2 * (len(STREAM) - 1 - 3)


def test_ring_overwrites_the_oldest_slot_and_counts_valid_starts():
    replay = UniformReplay(capacity=5, batch_size=2, num_envs=1, n_step=1, gamma=GAMMA)
    state = replay.init((2,), jnp.float32)
    assert int(replay.num_valid_starts(state)) == 0
    assert bool(state.is_reset_step.all())  # empty slots are never valid starts
    for t in range(7):
        state = replay.add(state, transition(t))
    assert int(state.count) == 7
    # slots hold t = 5, 6, 2, 3, 4 (t=5 and t=6 overwrote t=0 and t=1)
    np.testing.assert_array_equal(state.obs[:, 0, 0], [5.0, 6.0, 2.0, 3.0, 4.0])
    # starts t = 2..5 have their next observation stored: 4 starts
    assert int(replay.num_valid_starts(state)) == 4


def test_slots_never_smaller_than_an_n_step_window():
    assert UniformReplay(capacity=2, batch_size=1, num_envs=1, n_step=3).slots == 5
    assert UniformReplay(capacity=100, batch_size=1, num_envs=4, n_step=1).slots == 25


def test_add_writes_in_place_when_donated():
    replay = UniformReplay(capacity=1_000, batch_size=4, num_envs=1)
    state = replay.init((2,), jnp.float32)
    add = jax.jit(replay.add, donate_argnums=0)
    pointer = state.obs.unsafe_buffer_pointer()
    new_state = add(state, transition(0))
    assert state.obs.is_deleted()
    assert new_state.obs.unsafe_buffer_pointer() == pointer
    assert float(new_state.obs[0, 0, 0]) == 0.0 and int(new_state.count) == 1


def test_sample_shapes_and_dtypes():
    replay, state = filled(16, batch_size=5)
    batch = jax.jit(replay.sample)(state, jax.random.key(1))
    assert batch.obs.shape == (5, 2) and batch.next_obs.shape == (5, 2)
    assert batch.action.shape == (5,) and batch.action.dtype == jnp.int32
    assert batch.reward.dtype == jnp.float32 and batch.discount.dtype == jnp.float32
