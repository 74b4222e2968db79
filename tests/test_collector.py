"""Envpool collector: XLA and host stepping agree, the auto-reset step is flagged and
never counted, truncations are told apart from terminations, fixed-shape episode
statistics, raw-reward returns under learning-reward clipping, and the task list."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.stages.collect import EnvpoolCollector, UnknownTaskError, is_atari_task


def rollout(collector: EnvpoolCollector, actions: np.ndarray):
    """Steps `actions` (T, N) inside one jitted scan; returns (final state, transitions,
    episode stats, observation after each step), each stacked over T."""

    @jax.jit
    def run(state, actions):
        def body(state, action):
            state, transition, stats = collector.step(state, action)
            return state, (transition, stats, state.obs)

        return jax.lax.scan(body, state, actions)

    state, (transitions, stats, next_obs) = run(collector.init(), jnp.asarray(actions, jnp.int32))
    return state, jax.device_get(transitions), jax.device_get(stats), np.asarray(next_obs)


def test_auto_reset_step_is_flagged_and_not_counted():
    """CartPole with the cart always pushed left falls after a few steps; the step after
    `done` is envpool's auto-reset step: flagged, reward 0, not a termination, and the
    episode counters restart from it."""
    collector = EnvpoolCollector("CartPole-v1", num_envs=2, seed=3)
    _, tr, stats, next_obs = rollout(collector, np.zeros((30, 2), np.int32))
    for env in range(2):
        done = np.flatnonzero(stats.done[:, env])
        assert len(done) >= 2
        first = done[0]
        # the episode that ended at `first` lasted first + 1 steps, reward 1 each
        assert stats.episode_length[first, env] == first + 1
        assert stats.episode_return[first, env] == first + 1
        assert tr.terminated[first, env] and not tr.truncated[first, env]
        reset = first + 1
        assert tr.is_reset_step[reset, env]
        assert tr.reward[reset, env] == 0.0
        assert not tr.terminated[reset, env] and not tr.truncated[reset, env]
        assert stats.episode_length[reset, env] == 0 and stats.episode_return[reset, env] == 0.0
        # the reset step's stored observation is the last observation of the ended episode
        np.testing.assert_array_equal(tr.obs[reset, env], next_obs[first, env])
        # the next episode counts from the step after the reset step
        second = done[1]
        assert stats.episode_length[second, env] == second - reset
        # exactly the steps after a `done` are reset steps
        expected_resets = np.zeros(30, bool)
        expected_resets[done[done + 1 < 30] + 1] = True
        np.testing.assert_array_equal(tr.is_reset_step[:, env], expected_resets)


def test_xla_and_host_modes_give_the_same_stream():
    actions = np.random.default_rng(0).integers(0, 2, size=(60, 3))
    outputs = []
    for mode in ("xla", "host"):
        collector = EnvpoolCollector("CartPole-v1", num_envs=3, seed=7, mode=mode)
        outputs.append(rollout(collector, actions)[1:])
    (tr_x, st_x, obs_x), (tr_h, st_h, obs_h) = outputs
    for a, b in zip((*tr_x, *st_x, obs_x), (*tr_h, *st_h, obs_h)):
        np.testing.assert_array_equal(a, b)
    assert tr_x.is_reset_step.any()  # the stream went through at least one episode end


def test_time_limit_is_a_truncation_not_a_termination():
    collector = EnvpoolCollector("CartPole-v1", num_envs=1, seed=1, env_options=(("max_episode_steps", 5),))
    _, tr, stats, _ = rollout(collector, np.tile([[0], [1]], (6, 1)))  # alternate: never falls in 5 steps
    np.testing.assert_array_equal(tr.truncated[:, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0])
    assert not tr.terminated.any()
    np.testing.assert_array_equal(tr.is_reset_step[:, 0], [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(stats.episode_length[:, 0], [1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(stats.done[:, 0], tr.truncated[:, 0])


def test_episode_stats_have_fixed_shapes_and_dtypes():
    collector = EnvpoolCollector("CartPole-v1", num_envs=4, seed=0)
    state, tr, stats, _ = rollout(collector, np.zeros((3, 4), np.int32))
    assert stats.episode_return.shape == stats.episode_length.shape == stats.done.shape == (3, 4)
    assert stats.episode_return.dtype == np.float32 and stats.episode_length.dtype == np.int32
    assert tr.obs.shape == (3, 4, 4) and tr.action.dtype == np.int32
    assert state.obs.shape == (4, 4) and state.needs_reset.shape == (4,)


def test_reward_clip_changes_learning_rewards_not_returns():
    """LunarLander rewards are far outside [-1, 1] (a crash costs -100)."""
    actions = np.zeros((150, 1), np.int32)  # no engine: the lander crashes
    _, raw_tr, raw_stats, _ = rollout(EnvpoolCollector("LunarLander-v3", seed=2), actions)
    _, clip_tr, clip_stats, _ = rollout(EnvpoolCollector("LunarLander-v3", seed=2, reward_clip=1.0), actions)
    end = int(np.flatnonzero(raw_stats.done[:, 0])[0])
    assert np.abs(raw_tr.reward[: end + 1]).max() > 1.0
    np.testing.assert_allclose(clip_tr.reward, np.clip(raw_tr.reward, -1, 1))
    np.testing.assert_allclose(clip_stats.episode_return, raw_stats.episode_return)
    assert raw_stats.episode_return[end, 0] == pytest.approx(raw_tr.reward[: end + 1, 0].sum(), rel=1e-5)


def test_different_seeds_give_different_streams_and_same_seed_the_same():
    first = EnvpoolCollector("CartPole-v1", num_envs=2, seed=11).init().obs
    again = EnvpoolCollector("CartPole-v1", num_envs=2, seed=11).init().obs
    other = EnvpoolCollector("CartPole-v1", num_envs=2, seed=12).init().obs
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("task_id", "obs_shape", "num_actions"),
    [("CartPole-v1", (4,), 2), ("Acrobot-v1", (6,), 3), ("MountainCar-v0", (2,), 3), ("LunarLander-v3", (8,), 4)],
)
def test_classic_tasks_step_inside_jit(task_id, obs_shape, num_actions):
    collector = EnvpoolCollector(task_id, num_envs=2, seed=0)
    assert collector.obs_shape == obs_shape and collector.num_actions == num_actions
    actions = np.random.default_rng(1).integers(0, num_actions, size=(20, 2))
    _, tr, _, _ = rollout(collector, actions)
    assert tr.obs.shape == (20, 2, *obs_shape) and np.isfinite(tr.obs).all()
    np.testing.assert_array_equal(tr.action, actions)


def test_atari_task_steps_inside_jit_with_uint8_frame_stacks():
    assert is_atari_task("Pong-v5") and not is_atari_task("CartPole-v1")
    options = (("repeat_action_probability", 0.25), ("reward_clip", False), ("stack_num", 4))
    collector = EnvpoolCollector("Pong-v5", num_envs=1, seed=0, env_options=options, reward_clip=1.0)
    assert collector.obs_shape == (4, 84, 84) and collector.num_actions == 6
    state, tr, _, _ = rollout(collector, np.ones((8, 1), np.int32))
    assert tr.obs.dtype == np.uint8 and tr.obs.shape == (8, 1, 4, 84, 84)
    assert state.obs.dtype == jnp.uint8 and int(np.asarray(state.obs).max()) > 0


def test_unknown_task_id_suggests_the_nearest():
    with pytest.raises(UnknownTaskError, match=r"'CartPole-v9'.*did you mean 'CartPole-v1'"):
        EnvpoolCollector("CartPole-v9")


def test_continuous_action_task_gives_float_actions_in_its_bounds():
    """The collector steps Box-action tasks too (the learners check the action space):
    float32 (N, A) actions, bounds from the space, float32 observations."""
    collector = EnvpoolCollector("LunarLanderContinuous-v3", num_envs=2)
    assert collector.num_actions == 0 and collector.continuous
    assert collector.action_shape == (2,) and collector.action_dtype == np.float32
    assert collector.action_low == (-1.0, -1.0) and collector.action_high == (1.0, 1.0)
    state = collector.init()
    state, transition, _ = jax.jit(collector.step)(state, jnp.full((2, 2), 0.5, jnp.float32))
    assert transition.action.shape == (2, 2) and transition.action.dtype == jnp.float32
    assert state.obs.dtype == jnp.float32 and state.obs.shape == (2, *collector.obs_shape)
