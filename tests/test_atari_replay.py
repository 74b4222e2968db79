"""Frame-deduplicated replay: index-for-index equal to a buffer of full stacks, over a
scripted multi-episode stream (terminations, truncations, several envs, n-step,
wrap-around), with zero padding at episode starts; and on real Pong-v5 frames."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.stages.replay import FrameDedupReplay, UniformReplay
from sparseq.stages.replay.frame_dedup import replay_bytes
from sparseq.types import Transition

STACK = 4
FRAME = (1, 5, 6)  # (c, H, W): tiny frames, same code path as (1, 84, 84)


def stack_of(episode_frames: list[np.ndarray], padding: str) -> np.ndarray:
    """The envpool-style stack (S * c, H, W) of the last S frames of an episode."""
    last = episode_frames[-STACK:]
    fill = np.zeros_like(last[0]) if padding == "zeros" else episode_frames[0]
    frames = [fill] * (STACK - len(last)) + last
    return np.concatenate(frames, axis=0)


def scripted_stream(num_envs: int, steps: int, padding: str, seed: int = 0) -> Transition:
    """What the collector yields: per step and env, the stacked observation the action
    was taken in, the clipped reward, the end flags and envpool's auto-reset step
    (reward 0, observation = the ended episode's final observation). Episodes end by
    termination or truncation at random, some after a single step. Returns numpy
    arrays with a leading time axis: obs (T, N, S * c, H, W), the rest (T, N)."""
    rng = np.random.default_rng(seed)

    def new_frame() -> np.ndarray:
        return rng.integers(1, 256, FRAME, dtype=np.uint8)  # never 0: padding shows

    episodes = [[new_frame()] for _ in range(num_envs)]
    needs_reset = [False] * num_envs
    out = []
    for _ in range(steps):
        fields = {k: [] for k in Transition._fields}
        for e in range(num_envs):
            fields["obs"].append(stack_of(episodes[e], padding))
            fields["action"].append(rng.integers(0, 6))
            if needs_reset[e]:
                fields["reward"].append(0.0)
                fields["terminated"].append(False)
                fields["truncated"].append(False)
                fields["is_reset_step"].append(True)
                episodes[e] = [new_frame()]
                needs_reset[e] = False
                continue
            end = rng.random()
            terminated, truncated = end < 0.08, 0.08 <= end < 0.16
            fields["reward"].append(float(rng.integers(-1, 2)))
            fields["terminated"].append(terminated)
            fields["truncated"].append(truncated)
            fields["is_reset_step"].append(False)
            episodes[e].append(new_frame())
            needs_reset[e] = terminated or truncated
        out.append(fields)
    dtypes = {"obs": np.uint8, "action": np.int32, "reward": np.float32}
    return Transition(**{k: np.asarray([f[k] for f in out], dtypes.get(k, bool)) for k in Transition._fields})


def fill(replay, stream: Transition):
    state = replay.init((STACK * FRAME[0], *FRAME[1:]), jnp.uint8)
    scan = jax.jit(lambda s, xs: jax.lax.scan(lambda s, t: (replay.add(s, t), None), s, xs)[0])
    return scan(state, stream)


def all_valid_starts(replay, state) -> tuple[jax.Array, jax.Array]:
    """Every (time, env) start the sampler may return: in the window, n-step window
    written, not an auto-reset step."""
    count = int(state.count)
    times = np.arange(max(count - replay.slots, 0), count - replay.n_step)
    reset = np.asarray(state.is_reset_step)[times % replay.slots]  # (T, N)
    t, e = np.nonzero(~reset)
    return jnp.asarray(times[t], jnp.int32), jnp.asarray(e, jnp.int32)


jit_gather = eqx.filter_jit(lambda replay, state, times, envs: replay.gather(state, times, envs))
jit_sample = eqx.filter_jit(lambda replay, state, key: replay.sample(state, key))


def assert_batches_equal(a, b):
    for name in a._fields:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


CASES = [
    # (num_envs, n_step, capacity, padding): capacities force wrap-around (C << steps)
    (3, 3, 3 * 17, "zeros"),
    (1, 1, 11, "zeros"),
    (2, 5, 2 * 40, "repeat"),
]


@pytest.mark.parametrize(("num_envs", "n_step", "capacity", "padding"), CASES)
def test_dedup_equals_full_stack_buffer_index_for_index(num_envs, n_step, capacity, padding):
    stream = scripted_stream(num_envs, steps=120, padding=padding)
    common = dict(capacity=capacity, batch_size=16, num_envs=num_envs, n_step=n_step, gamma=0.9)
    naive = UniformReplay(**common)
    dedup = FrameDedupReplay(**common, stack_num=STACK, padding=padding)
    naive_state, dedup_state = fill(naive, stream), fill(dedup, stream)
    assert int(dedup_state.count) > naive.slots + STACK  # the rings wrapped

    times, envs = all_valid_starts(naive, naive_state)
    assert times.shape[0] >= 5
    # Every valid start, including the oldest ones whose history frames lie before
    # the transition window: the same (s, a, r_n, discount, s').
    assert_batches_equal(jit_gather(naive, naive_state, times, envs), jit_gather(dedup, dedup_state, times, envs))
    assert int(naive.num_valid_starts(naive_state)) == int(dedup.num_valid_starts(dedup_state))
    # Sampling draws the same indices, so the batches match key for key.
    for seed in range(3):
        key = jax.random.key(seed)
        assert_batches_equal(jit_sample(naive, naive_state, key), jit_sample(dedup, dedup_state, key))
    # The stream held terminations, truncations and auto-reset steps.
    assert stream.terminated.any() and stream.truncated.any() and stream.is_reset_step.any()


def test_episode_start_is_zero_padded_and_reset_step_never_sampled():
    stream = scripted_stream(2, steps=60, padding="zeros", seed=1)
    dedup = FrameDedupReplay(capacity=2 * 100, batch_size=256, num_envs=2, n_step=1, stack_num=STACK)
    state = fill(dedup, stream)
    flags = stream
    # First observation of each episode: t = 0 and the step after each auto-reset step.
    starts = [(0, e) for e in range(2)] + [(t + 1, e) for t, e in zip(*np.nonzero(flags.is_reset_step)) if t + 1 < 59]
    times = jnp.asarray([t for t, _ in starts], jnp.int32)
    envs = jnp.asarray([e for _, e in starts], jnp.int32)
    gather_obs = eqx.filter_jit(lambda state, times, envs: dedup.gather_obs(state, times, envs))
    obs = np.asarray(gather_obs(state, times, envs))
    assert (obs[:, :-1] == 0).all()  # S - 1 zero frames before the first frame
    newest = np.stack([stream.obs[t, e, -1] for t, e in starts])
    np.testing.assert_array_equal(obs[:, -1], newest)
    assert (newest > 0).all()
    # Second observation of an episode: two zero frames, then the first two frames.
    second = np.asarray(gather_obs(state, times + 1, envs))
    not_ended = ~flags.is_reset_step[np.asarray(times + 1), np.asarray(envs)]
    assert (second[not_ended, :2] == 0).all() and (second[not_ended, 2:] > 0).all()

    sampled_t, sampled_e = dedup.sample_indices(state, jax.random.key(0))
    assert not np.asarray(state.is_reset_step[sampled_t % dedup.slots, sampled_e]).any()


def test_replay_bytes_at_atari_scale():
    """1M Atari transitions: ~7.06 GB deduplicated vs ~28 GB of full stacks (computed
    from shapes, checked against a small allocated state)."""
    dedup = replay_bytes(1_000_000, (4, 84, 84))
    full = replay_bytes(1_000_000, (4, 84, 84), dedup=False)
    assert dedup <= 7.5e9 and full > 28e9
    small = FrameDedupReplay(capacity=40, batch_size=4, num_envs=2, n_step=3, stack_num=4)
    state = small.init((4, 84, 84), jnp.uint8)
    leaves = [x for x in jax.tree.leaves(state) if x.ndim > 0]
    assert sum(x.size * x.dtype.itemsize for x in leaves) == replay_bytes(40, (4, 84, 84), num_envs=2, n_step=3)


@pytest.mark.parametrize("padding", ["zeros", "repeat"])
def test_dedup_equals_full_stack_buffer_on_pong_frames(padding):
    """Real envpool Atari frames through the collector (short episodes: the 30-step cap
    truncates, with 2 envs): both buffers return the same samples at every index."""
    from sparseq.pipeline.config.build import make_collector, make_replay
    from sparseq.pipeline.config.schema import PipelineConfig

    base = PipelineConfig()
    config = dataclasses.replace(
        base,
        env=dataclasses.replace(
            base.env,
            task_id="Pong-v5",
            num_envs=2,
            max_episode_steps=30,
            reward_clip=1.0,
            envpool_options="atari",  # what envs/atari.toml sets
            atari=dataclasses.replace(base.env.atari, stack_padding=padding),
        ),
        learner=dataclasses.replace(base.learner, n_step=3),
        replay=dataclasses.replace(base.replay, capacity=2 * 50, batch_size=8, dedup_frames="on"),
    )
    collector = make_collector(config)
    dedup = make_replay(config, collector.obs_shape)
    assert isinstance(dedup, FrameDedupReplay) and dedup.padding == padding
    naive = dataclasses.replace(config, replay=dataclasses.replace(config.replay, dedup_frames="off"))
    naive = make_replay(naive, collector.obs_shape)
    assert type(naive) is UniformReplay

    def run(carry, key):
        cstate, naive_state, dedup_state = carry
        actions = jax.random.randint(key, (2,), 0, collector.num_actions)
        cstate, transition, _ = collector.step(cstate, actions)
        return (cstate, naive.add(naive_state, transition), dedup.add(dedup_state, transition)), transition.obs

    shape, dtype = collector.obs_shape, collector.obs_dtype
    carry = (collector.init(), naive.init(shape, dtype), dedup.init(shape, dtype))
    (_, naive_state, dedup_state), observed = jax.jit(lambda c, k: jax.lax.scan(run, c, k))(
        carry, jax.random.split(jax.random.key(0), 140)
    )
    times, envs = all_valid_starts(naive, naive_state)
    assert_batches_equal(jit_gather(naive, naive_state, times, envs), jit_gather(dedup, dedup_state, times, envs))
    # The collector's own stacks at episode starts (t = 0, 31, 62: 30 transitions, then
    # the auto-reset step) hold zeros or copies of the first frame.
    first = np.asarray(observed[np.array([0, 31, 62]), 0])
    assert (first[:, 3] > 0).any()
    if padding == "zeros":
        assert (first[:, :3] == 0).all()
    else:
        assert all((first[:, i] == first[:, 3]).all() for i in range(3))


def test_a_stream_built_replay_equals_the_added_one():
    """The offline path builds the state directly; it matches T adds, leaf for leaf
    (the next entry's episode position included)."""
    from sparseq.stages.datasets.stream import Stream, replay_state_from_stream

    stream = scripted_stream(num_envs=1, steps=40, padding="zeros", seed=3)
    replay = FrameDedupReplay(capacity=64, batch_size=4, num_envs=1, stack_num=STACK)
    added = fill(replay, stream)
    newest = {k: getattr(stream, k)[:, 0] for k in Transition._fields}
    newest["obs"] = newest["obs"][:, -FRAME[0] :]
    built = replay_state_from_stream(replay, Stream(**newest))
    for name, a, b in zip(type(added).__dataclass_fields__, jax.tree.leaves(added), jax.tree.leaves(built)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_adds_update_the_rings_in_place():
    """`add` reads no ring: a write fused with a read of a ring at another index is
    not done in place, and XLA then copies the ring every step."""
    replay = FrameDedupReplay(capacity=3000, batch_size=4, num_envs=1, stack_num=STACK)
    stream = jax.tree.map(jnp.asarray, scripted_stream(num_envs=1, steps=4, padding="zeros"))
    state = replay.init((STACK * FRAME[0], *FRAME[1:]), jnp.uint8)

    def four_adds(state, stream):
        for t in range(4):
            state = replay.add(state, jax.tree.map(lambda x, t=t: x[t], stream))
        return state

    text = jax.jit(four_adds, donate_argnums=0).lower(state, stream).compile().as_text()
    rings = (f"[{replay.slots},", f"[{replay.frame_slots},")
    copies = [line for line in text.splitlines() if " copy(" in line and any(r in line for r in rings)]
    assert copies == []
