"""Pipeline composition from Python: the target-sync period, update_every and warm-up
bookkeeping, the epsilon the collector acts with, that the auto-reset steps the
pipeline stores are never sampled, and that the traced `step` equals the runner's
statically split cycles."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparseq.pipeline.compose import Exploration, Pipeline
from sparseq.stages.collect import EnvpoolCollector
from sparseq.stages.learners import QLearner
from sparseq.stages.learners.population import select_member
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.stages.operators import TargetSync, period_crossed
from sparseq.stages.replay import UniformReplay
from sparseq.stages.schedules import linear_epsilon


def make_network(key):
    torso_key, head_key = jax.random.split(key)
    return QNetwork(MLPTorso(4, (16,), key=torso_key), 1, 2, "lecun_normal", key=head_key)


def cartpole_pipeline(*, num_envs=1, update_every=1, warmup=20, period=10, target="network", seed=0, mode="xla"):
    operators = (TargetSync(period=period),) if target == "network" else ()
    return Pipeline(
        collector=EnvpoolCollector("CartPole-v1", num_envs=num_envs, seed=seed, mode=mode),
        replay=UniformReplay(capacity=2_000, batch_size=8, num_envs=num_envs),
        learner=QLearner(make_network, optax.adam(1e-3), num_actions=2, target=target),
        operators=operators,
        exploration=Exploration(start=1.0, end=0.1, decay_steps=40),
        warmup=warmup,
        update_every=update_every,
    )


def cycles(pipeline: Pipeline, state, count: int):
    """Runs `count` cycles, one jitted call each (as the runner's `cycle` loop)."""
    calls = {flag: eqx.filter_jit(lambda s, flag=flag: pipeline.cycle(s, flag)) for flag in (False, True)}
    history = []
    for c in range(count):
        state, metrics = calls[pipeline.learns_in_cycle(c)](state)
        history.append((state, jax.device_get(metrics)))
    return state, history


def same_tree(a, b) -> bool:
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize(
    ("period", "before", "after", "due"),
    [(10, 0, 1, False), (10, 9, 10, True), (10, 10, 11, False), (10, 8, 12, True), (10, 0, 25, True), (3, 3, 5, False)],
)
def test_period_crossed(period, before, after, due):
    assert bool(period_crossed(period, jnp.asarray(before), jnp.asarray(after))) is due


def test_target_sync_copies_the_online_network_every_period():
    """Period 10, one update per step after a 20-step warm-up: after the cycle ending at
    a multiple of 10 the target equals the online network; between syncs it lags."""
    pipeline = cartpole_pipeline(period=10, warmup=20)
    _, history = cycles(pipeline, pipeline.init(jax.random.key(0)), 45)
    for state, metrics in history:
        steps = int(state.env_steps)
        assert bool(metrics["target_updated"]) is (steps % 10 == 0), steps
        online = select_member(state.learner.online, 0)
        # before learning starts the online network does not move, so the copies agree
        expected_equal = steps % 10 == 0 or steps < pipeline.learning_starts
        assert same_tree(online, state.learner.target) is expected_equal, steps
    # the target is the online network as it was at the last sync (step 40), not later
    synced_online = select_member(history[39][0].learner.online, 0)
    assert same_tree(history[44][0].learner.target, synced_online)


def test_target_sync_with_several_environments_syncs_on_crossing():
    """4 environments: cycles end at 4, 8, 12, ...; the period-10 syncs fall in the
    cycles that cross 10, 20, 30, 40 (ending at 12, 20, 32, 40)."""
    pipeline = cartpole_pipeline(num_envs=4, update_every=2, warmup=8, period=10)
    _, history = cycles(pipeline, pipeline.init(jax.random.key(0)), 10)
    synced = [int(s.env_steps) for s, m in history if bool(m["target_updated"])]
    assert synced == [12, 20, 32, 40]
    # two gradient steps per cycle of 4 steps, in every cycle from the one reaching 8
    assert int(history[-1][0].learner.updates) == 2 * 9


def test_target_sync_resets_loss_sums_and_refuses_a_target_free_learner():
    pipeline = cartpole_pipeline()
    state = pipeline.init(jax.random.key(0)).learner
    state = eqx.tree_at(lambda s: s.loss_sums, state, jnp.asarray([5.0]))
    sync = TargetSync(period=10)
    _, kept, metrics = sync((), state, jnp.asarray(3), jnp.asarray(4))
    assert not bool(metrics["target_updated"]) and float(kept.loss_sums[0]) == 5.0
    _, synced, metrics = sync((), state, jnp.asarray(9), jnp.asarray(10))
    assert bool(metrics["target_updated"]) and float(synced.loss_sums[0]) == 0.0
    tf_state = cartpole_pipeline(target="online").init(jax.random.key(0)).learner
    with pytest.raises(ValueError, match="target='network'"):
        sync((), tf_state, jnp.asarray(9), jnp.asarray(10))


@pytest.mark.parametrize(
    ("num_envs", "update_every", "warmup", "count", "updates"),
    [
        # N=1, one update per 4 steps: cycles end at 4, 8, ..., 80; learning from the
        # cycle reaching step 40: 11 cycles, one update each.
        (1, 4, 40, 20, 11),
        # N=4, update every step: 4 updates per cycle, from the cycle reaching step 16.
        (4, 1, 16, 10, 4 * 7),
    ],
)
def test_update_every_and_warmup(num_envs, update_every, warmup, count, updates):
    pipeline = cartpole_pipeline(num_envs=num_envs, update_every=update_every, warmup=warmup)
    assert pipeline.steps_per_cycle == max(num_envs, update_every)
    state, history = cycles(pipeline, pipeline.init(jax.random.key(1)), count)
    assert int(state.env_steps) == count * pipeline.steps_per_cycle
    assert int(state.learner.updates) == updates
    learned = [bool(m["updated"]) for _, m in history]
    assert learned == [int(s.env_steps) >= warmup for s, _ in history]


def test_update_every_must_divide_or_be_a_multiple_of_num_envs():
    with pytest.raises(ValueError, match="update_every=3 must divide num_envs=4"):
        cartpole_pipeline(num_envs=4, update_every=3)


def test_acting_epsilon_follows_the_schedule_from_the_end_of_warmup():
    pipeline = cartpole_pipeline(warmup=20)  # learning_starts = 20, decay over 40 steps to 0.1
    _, history = cycles(pipeline, pipeline.init(jax.random.key(0)), 80)
    epsilons = np.concatenate([m["epsilon"] for _, m in history])
    steps_before = np.arange(80)
    expected = [1.0 if s <= 20 else max(0.1, 1.0 - 0.9 * (s - 20) / 40) for s in steps_before]
    np.testing.assert_allclose(epsilons, expected, atol=1e-6)
    schedule = linear_epsilon(steps_before, start=1.0, end=0.1, decay_steps=40, warmup=20)
    np.testing.assert_allclose(epsilons, schedule, atol=1e-6)


def test_auto_reset_steps_are_stored_flagged_and_never_sampled():
    pipeline = cartpole_pipeline(num_envs=2, warmup=400)  # random acting: short episodes
    state, history = cycles(pipeline, pipeline.init(jax.random.key(0)), 200)
    done = np.stack([m["episode_done"] for _, m in history])  # (T, N)
    flags = np.asarray(state.replay.is_reset_step[:200])  # slot t holds time step t
    # every step right after an episode end is flagged, and only those
    expected = np.zeros_like(done)
    expected[1:] = done[:-1]
    np.testing.assert_array_equal(flags, expected)
    assert flags.sum() >= 10
    keys = jax.random.split(jax.random.key(3), 300)
    times, envs = jax.jit(jax.vmap(pipeline.replay.sample_indices, in_axes=(None, 0)))(state.replay, keys)
    times, envs = np.asarray(times).ravel(), np.asarray(envs).ravel()
    assert not flags[times, envs].any()
    assert times.max() <= 200 - 1 - pipeline.replay.n_step  # the bootstrap observation is stored
    assert len(set(zip(times.tolist(), envs.tolist()))) > 300  # spread over the buffer


def test_traced_step_equals_the_runner_split_and_is_deterministic():
    """`Pipeline.step` (learning decided by a traced flag) inside one scan gives the
    same state as the statically split collect-only and learning cycles."""
    first = cartpole_pipeline(warmup=20)
    scanned, _ = eqx.filter_jit(lambda s: jax.lax.scan(first.step, s, None, length=60))(first.init(jax.random.key(4)))
    second = cartpole_pipeline(warmup=20)  # a fresh pool with the same seed
    split, _ = cycles(second, second.init(jax.random.key(4)), 60)
    # envpool's handle is a pointer to its pool, different for the two pools
    scanned, split = (eqx.tree_at(lambda s: s.collector.handle, s, jnp.zeros(1)) for s in (scanned, split))
    leaves = (jax.tree.leaves(eqx.filter(s, eqx.is_array)) for s in (scanned, split))
    for a, b in zip(*leaves):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(scanned.learner.updates) == 41


def test_host_stepping_pipeline_equals_xla_stepping():
    """The host mode (io_callback) sits behind the same interface: same seed, same run."""
    states = []
    for mode in ("xla", "host"):
        pipeline = cartpole_pipeline(num_envs=2, warmup=10, mode=mode)
        state, _ = cycles(pipeline, pipeline.init(jax.random.key(2)), 30)
        states.append(state)
    xla, host = states
    np.testing.assert_array_equal(xla.replay.obs, host.replay.obs)
    np.testing.assert_array_equal(xla.replay.is_reset_step, host.replay.is_reset_step)
    for a, b in zip(jax.tree.leaves(xla.learner.online), jax.tree.leaves(host.learner.online)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _learning_state(pipeline: Pipeline):
    """The state at the pipeline's first learning cycle (after its warm-up cycles)."""
    state = pipeline.init(jax.random.key(0))
    warm_up = eqx.filter_jit(lambda s: pipeline.cycle(s, False))
    c = 0
    while not pipeline.learns_in_cycle(c):
        state, _ = warm_up(state)
        c += 1
    return state, c


def _arrays(tree):
    return eqx.filter(tree, eqx.is_array)


def test_a_traced_learn_flag_runs_the_static_flags_cycles():
    """The runner's scan loop (one program for warm-up and learning) passes the flag
    traced: the same numbers as the per-flag programs (two pools of the same seed, as
    a pool cannot be stepped twice from one state)."""
    static, traced = cartpole_pipeline(), cartpole_pipeline()
    a, b = static.init(jax.random.key(0)), traced.init(jax.random.key(0))
    by_flag = eqx.filter_jit(lambda s, f: traced.cycle(s, f))
    per_flag = {flag: eqx.filter_jit(lambda s, flag=flag: static.cycle(s, flag)) for flag in (False, True)}
    for c in range(30):
        learn = static.learns_in_cycle(c)
        a, metrics_a = per_flag[learn](a)
        b, metrics_b = by_flag(b, jnp.asarray(learn))
        assert same_tree(metrics_a, metrics_b), c
    assert static.learns_in_cycle(29) and not static.learns_in_cycle(0)
    assert same_tree(_arrays(a.learner), _arrays(b.learner)) and same_tree(a.replay, b.replay)


def test_overlap_learns_from_the_state_before_the_cycles_steps():
    """learner.overlap: the gradient step reads the replay and learner from before the
    cycle's environment step (with a key folded out of the cycle's first key), so the
    two are independent; the collection itself is the plain pipeline's."""
    from sparseq.pipeline.compose import OVERLAP_KEY_TAG

    overlapped = dataclasses.replace(cartpole_pipeline(target="online"), overlap=True)
    plain = cartpole_pipeline(target="online")
    assert overlapped.learning_starts == plain.learning_starts  # warm-up 20 > the (n + 1) * N + 1 floor
    state, _ = _learning_state(overlapped)
    plain_state, _ = _learning_state(plain)
    assert same_tree(state.replay, plain_state.replay)
    after, metrics = eqx.filter_jit(lambda s: overlapped.cycle(s, True))(state)
    key = jax.random.fold_in(state.key, OVERLAP_KEY_TAG)
    expected, _ = eqx.filter_jit(overlapped.learn)(eqx.tree_at(lambda s: s.key, state, key))
    assert same_tree(_arrays(after.learner), _arrays(expected.learner))
    collected, _ = eqx.filter_jit(lambda s: plain.cycle(s, False))(plain_state)
    assert same_tree(after.replay, collected.replay) and same_tree(after.collector.obs, collected.collector.obs)
    assert int(metrics["gradient_steps"]) == 1


def test_overlap_needs_one_cycle_more_before_learning():
    pipeline = cartpole_pipeline(warmup=0, num_envs=2)
    overlapped = dataclasses.replace(pipeline, overlap=True)
    assert overlapped.learning_starts == pipeline.learning_starts + pipeline.steps_per_cycle


def test_overlap_runs_the_operators_on_the_learned_learner():
    """With the operators in the overlapped window, a cycle ends as the plain order
    would have it: gradient steps on the state from before, then the operators at the
    cycle's step counters (a target sync falls due in this cycle)."""
    from sparseq.pipeline.compose import OVERLAP_KEY_TAG

    overlapped = dataclasses.replace(cartpole_pipeline(period=1), overlap=True)
    state, _ = _learning_state(overlapped)
    after, metrics = eqx.filter_jit(lambda s: overlapped.cycle(s, True))(state)
    learned, _ = eqx.filter_jit(overlapped.learn)(
        eqx.tree_at(lambda s: s.key, state, jax.random.fold_in(state.key, OVERLAP_KEY_TAG))
    )
    moved = eqx.tree_at(lambda s: s.env_steps, learned, state.env_steps + overlapped.steps_per_cycle)
    expected, _ = eqx.filter_jit(overlapped.apply_operators)(moved, state.env_steps)
    assert same_tree(_arrays(after.learner), _arrays(expected.learner))
    assert same_tree(after.operators, expected.operators)
    assert int(after.env_steps) == int(state.env_steps) + 1 and same_tree(after.key, jax.random.split(state.key)[0])
    assert int(metrics["gradient_steps"]) == 1


def _schedule_positions(pipeline: Pipeline, state) -> tuple[int, int, list[int]]:
    """Where the compiled cycle sends to the pool, receives from it, and runs the
    gradient's matrix products (traced under a transposed jvp), in its schedule."""
    arrays, rest = eqx.partition(state, eqx.is_array)
    # Straight-line collection, so the plain cycle's envpool calls are not in a loop body.
    cycle = jax.jit(lambda a: eqx.filter(pipeline.cycle(eqx.combine(a, rest), True, True), eqx.is_array))
    text = cycle.lower(arrays).compile().as_text()
    entry = text[text.index("\nENTRY") :].splitlines()
    send = next(i for i, line in enumerate(entry) if "custom-call(" in line and "_send" in line)
    recv = next(i for i, line in enumerate(entry) if "custom-call(" in line and "_recv" in line)
    # The backward pass's matrix products (an input-free broadcast may be hoisted anywhere).
    gradient = [i for i, line in enumerate(entry) if "transpose(jvp" in line and "dot_general" in line]
    return send, recv, gradient


def test_overlap_schedules_the_gradient_step_between_send_and_receive():
    """The point of the overlap: in XLA's schedule the gradient step sits between
    handing the actions to envpool and waiting for its step, so envpool's threads
    step the environment meanwhile; without it, the wait comes first."""
    overlapped = dataclasses.replace(cartpole_pipeline(target="online"), overlap=True)
    state, _ = _learning_state(overlapped)
    send, recv, gradient = _schedule_positions(overlapped, state)
    assert gradient and send < min(gradient) and max(gradient) < recv
    plain = cartpole_pipeline(target="online")
    plain_state, _ = _learning_state(plain)
    send, recv, gradient = _schedule_positions(plain, plain_state)
    assert gradient and recv < min(gradient)


def _replay_copies(pipeline: Pipeline, state) -> list[str]:
    """The copies of replay-sized buffers (one row per slot) in the runner's compiled loop."""
    from sparseq.runs.runner import ChunkRunner

    runner = ChunkRunner(pipeline, "scan", max_cycles=16)
    control = (jnp.asarray(4, jnp.int32), jnp.asarray(True))
    text = runner._loop().lower(control, state).compile().compiled.as_text()
    rows = f"[{pipeline.replay.slots},"
    return [line.strip()[:120] for line in text.splitlines() if " copy(" in line and rows in line.split("copy(")[0]]


def test_overlapped_loop_writes_the_replay_in_place():
    """The replay's writes wait for the gradient steps' reads of it: else XLA copies
    the buffers it writes early (observation, action), every step, for the reads."""
    overlapped = dataclasses.replace(cartpole_pipeline(target="online"), overlap=True)
    state, _ = _learning_state(overlapped)
    assert _replay_copies(overlapped, state) == []
    plain = cartpole_pipeline(target="online")
    assert _replay_copies(plain, _learning_state(plain)[0]) == []
