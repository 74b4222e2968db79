"""iS-QL (iterated Shared Q-Learning): iterated loss, head 0's zero gradient, the
window shift, acting heads, LayerNorm placement, torsos, and the pipeline files."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import chisquare

from sparseq.pipeline.config import ConfigError, load_pipeline
from sparseq.pipeline.config.build import build_pipeline, make_network_factory, num_heads
from sparseq.runs.runner import summarize_chunk
from sparseq.stages.learners.q_learner import LearnerState, QLearner
from sparseq.stages.networks import ImpalaTorso, MLPTorso, NatureCNNTorso, QNetwork
from sparseq.stages.networks.impala import ResidualBlock, channel_norm, max_pool_same
from sparseq.stages.operators.shared_target_shift import SharedTargetShift
from sparseq.types import Batch

# ---------------------------------------------------------------- helpers


def linear_learner(in_features: int, heads: int, actions: int, optimizer=None, population: int = 1) -> QLearner:
    """A Q-network with no hidden layer: Q(s) = W s + b read as (heads, actions)."""

    def make(key):
        return QNetwork(MLPTorso(in_features, (), key=key), heads, actions, "lecun_normal", key=key)

    return QLearner(
        make_network=make,
        optimizer=optimizer or optax.adam(1e-3),
        num_actions=actions,
        population=population,
        target="online",
    )


def with_head(state: LearnerState, weight: np.ndarray, bias: np.ndarray) -> LearnerState:
    """Sets the (stacked, P = 1) last-layer kernel (H*A, F) and bias (H*A,)."""
    return eqx.tree_at(
        lambda s: (s.online.head.linear.weight, s.online.head.linear.bias),
        state,
        (jnp.asarray(weight, jnp.float32)[None], jnp.asarray(bias, jnp.float32)[None]),
    )


def random_batch(key, batch: int, features: int, actions: int) -> Batch:
    k = jax.random.split(key, 5)
    return Batch(
        obs=jax.random.normal(k[0], (batch, features)),
        action=jax.random.randint(k[1], (batch,), 0, actions),
        reward=jax.random.normal(k[2], (batch,)),
        discount=jnp.where(jax.random.uniform(k[3], (batch,)) < 0.3, 0.0, 0.99),
        next_obs=jax.random.normal(k[4], (batch, features)),
    )


# ---------------------------------------------------------------- the iterated loss


def test_loss_matches_hand_computation():
    # F = 1, A = 2, K = 2 (3 heads), Q_h(s) = w_h * s + b_h (w_h, b_h in R^2), batch of 2.
    weight = np.array([[1.0], [2.0], [0.5], [-1.0], [3.0], [0.0]])  # rows: h0a0 h0a1 h1a0 h1a1 h2a0 h2a1
    bias = np.array([0.0, 1.0, 0.0, 0.5, -1.0, 2.0])
    batch = Batch(
        obs=jnp.array([[1.0], [2.0]]),
        action=jnp.array([0, 1]),
        reward=jnp.array([1.0, -1.0]),
        discount=jnp.array([0.5, 0.0]),
        next_obs=jnp.array([[2.0], [-1.0]]),
    )
    # Sample 1: s = 1, a = 0, r = 1, discount 0.5, s' = 2.
    #   Q_0(s') = (2, 5), Q_1(s') = (1, -1.5); Q_1(s, 0) = 0.5, Q_2(s, 0) = 2.
    #   head 1: (0.5 - (1 + 0.5 * 5))^2 = 9;   head 2: (2 - (1 + 0.5 * 1))^2 = 0.25
    # Sample 2: s = 2, a = 1, r = -1, terminal; Q_1(s, 1) = -1.5, Q_2(s, 1) = 2.
    #   head 1: (-1.5 + 1)^2 = 0.25;           head 2: (2 + 1)^2 = 9
    # Per-head batch means: (4.625, 4.625); summed: 9.25 (differentiated); mean: 4.625 (logged).
    learner = linear_learner(1, 3, 2)
    state = with_head(learner.init(jax.random.key(0)), weight, bias)
    new_state, metrics = eqx.filter_jit(learner.update)(state, batch)
    np.testing.assert_allclose(metrics["head_losses"][0], [4.625, 4.625], rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_sum"][0], 9.25, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"][0], 4.625, rtol=1e-6)
    np.testing.assert_allclose(new_state.loss_sums[0], 9.25, rtol=1e-6)


def test_loss_matches_numpy_loops_random_network():
    heads, actions, features, size = 4, 3, 5, 16
    learner = linear_learner(features, heads, actions)
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(heads * actions, features))
    bias = rng.normal(size=(heads * actions,))
    state = with_head(learner.init(jax.random.key(0)), weight, bias)
    batch = random_batch(jax.random.key(2), size, features, actions)
    _, metrics = eqx.filter_jit(learner.update)(state, batch)

    obs, next_obs = np.asarray(batch.obs, np.float64), np.asarray(batch.next_obs, np.float64)
    expected = np.zeros(heads - 1)
    for b in range(size):
        q = (weight @ obs[b] + bias).reshape(heads, actions)
        q_next = (weight @ next_obs[b] + bias).reshape(heads, actions)
        for k in range(1, heads):
            target = float(batch.reward[b]) + float(batch.discount[b]) * q_next[k - 1].max()
            expected[k - 1] += (q[k, int(batch.action[b])] - target) ** 2 / size
    np.testing.assert_allclose(metrics["head_losses"][0], expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss_sum"][0], expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"][0], expected.mean(), rtol=1e-5)


def test_head_zero_gets_exactly_zero_gradient_and_never_moves():
    heads, actions, features = 4, 3, 5
    learner = linear_learner(features, heads, actions, optax.adam(1e-2))
    state = learner.init(jax.random.key(0))
    before = state.online.head.linear
    update = eqx.filter_jit(learner.update)
    for i in range(5):
        state, _ = update(state, random_batch(jax.random.key(10 + i), 8, features, actions))
    after = state.online.head.linear
    # Head 0 rows are bitwise unchanged; every other head moved.
    np.testing.assert_array_equal(after.weight[:, :actions], before.weight[:, :actions])
    np.testing.assert_array_equal(after.bias[:, :actions], before.bias[:, :actions])
    for h in range(1, heads):
        rows = slice(h * actions, (h + 1) * actions)
        assert not np.allclose(after.weight[:, rows], before.weight[:, rows])
    # Adam's first and second moments of head 0 are exactly zero: every gradient was 0.
    adam = state.opt_state[0]
    for moment in (adam.mu, adam.nu):
        assert np.all(np.asarray(moment.head.linear.weight[:, :actions]) == 0.0)
        assert np.all(np.asarray(moment.head.linear.bias[:, :actions]) == 0.0)
        assert np.any(np.asarray(moment.head.linear.weight[:, actions:]) != 0.0)


def test_head_zero_gradient_is_exactly_zero_with_a_torso():
    # Direct gradient of the learner's loss through an MLP torso with LayerNorm.
    heads, actions, features = 3, 2, 4

    def make(key):
        return QNetwork(MLPTorso(features, (8, 8), layer_norm=True, key=key), heads, actions, "lecun_normal", key=key)

    # SGD with learning rate -1 adds the raw gradient: params_after - params_before = grad.
    learner = QLearner(make, optax.sgd(-1.0), actions, target="online")
    state = learner.init(jax.random.key(3))
    new_state, _ = eqx.filter_jit(learner.update)(state, random_batch(jax.random.key(4), 8, features, actions))
    before, after = state.online, new_state.online
    np.testing.assert_array_equal(after.head.linear.weight[:, :actions], before.head.linear.weight[:, :actions])
    np.testing.assert_array_equal(after.head.linear.bias[:, :actions], before.head.linear.bias[:, :actions])
    moved = np.abs(np.asarray(after.head.linear.weight - before.head.linear.weight))
    assert np.all(moved[:, actions:].sum(axis=-1) > 0)
    assert np.any(np.asarray(after.torso.layers[0].weight) != np.asarray(before.torso.layers[0].weight))


def test_separate_forward_matches_concat_forward():
    # s' in its own stop-gradient pass gives the same losses and the same update as
    # one pass on concat(s, s') (per-example layers: LayerNorm normalises each sample).
    heads, actions, features = 4, 3, 5

    def make(key):
        return QNetwork(MLPTorso(features, (16,), layer_norm=True, key=key), heads, actions, "lecun_normal", key=key)

    batch = random_batch(jax.random.key(7), 16, features, actions)
    results = []
    for mode in ("concat", "separate"):
        learner = QLearner(make, optax.sgd(0.1), actions, target="online", online_forward=mode)
        initial = learner.init(jax.random.key(8))
        results.append(eqx.filter_jit(learner.update)(initial, batch))
    (concat_state, concat_metrics), (separate_state, separate_metrics) = results
    np.testing.assert_allclose(separate_metrics["head_losses"], concat_metrics["head_losses"], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(concat_state.online), jax.tree.leaves(separate_state.online)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(concat_state.online.head.linear.weight, initial.online.head.linear.weight)


# ---------------------------------------------------------------- the window shift


def _stacked_state(population: int, heads: int, actions: int, features: int, masked: bool = False):
    learner = linear_learner(features, heads, actions, population=population)
    state = learner.init(jax.random.key(0))
    rng = np.random.default_rng(5)
    weight = jnp.asarray(rng.normal(size=(population, heads * actions, features)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(population, heads * actions)), jnp.float32)
    state = eqx.tree_at(
        lambda s: (s.online.head.linear.weight, s.online.head.linear.bias, s.updates),
        state,
        (weight, bias, jnp.asarray(7, jnp.int32)),
    )
    if masked:
        masks = jax.tree.map(lambda x: None, state.online)
        masks = eqx.tree_at(
            lambda m: m.head.linear.weight,
            masks,
            jnp.asarray(rng.uniform(size=weight.shape) < 0.5),
            is_leaf=lambda node: node is None,
        )
        state = eqx.tree_at(lambda s: s.masks, state, masks, is_leaf=lambda node: node is None)
    return state


def test_shift_moves_exactly_the_head_slices():
    population, heads, actions, features = 2, 4, 3, 5
    state = _stacked_state(population, heads, actions, features)
    operator = SharedTargetShift(period=100)
    _, shifted, metrics = operator((), state, jnp.asarray(99), jnp.asarray(100))
    assert bool(metrics["heads_shifted"])
    old_w, old_b = np.asarray(state.online.head.linear.weight), np.asarray(state.online.head.linear.bias)
    new_w, new_b = np.asarray(shifted.online.head.linear.weight), np.asarray(shifted.online.head.linear.bias)
    a = actions
    for h in range(heads - 1):
        np.testing.assert_array_equal(new_w[:, h * a : (h + 1) * a], old_w[:, (h + 1) * a : (h + 2) * a])
        np.testing.assert_array_equal(new_b[:, h * a : (h + 1) * a], old_b[:, (h + 1) * a : (h + 2) * a])
    np.testing.assert_array_equal(new_w[:, -a:], old_w[:, -a:])  # head K keeps its weights
    np.testing.assert_array_equal(new_b[:, -a:], old_b[:, -a:])
    # Nothing else changed: torso, optimizer state (not shifted), counters.
    rest = lambda s: eqx.tree_at(lambda t: t.online.head.linear, s, None)  # noqa: E731
    for x, y in zip(jax.tree.leaves(rest(state)), jax.tree.leaves(rest(shifted))):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_shift_gates_on_period_and_on_learning_started():
    state = _stacked_state(1, 3, 2, 4)
    operator = SharedTargetShift(period=100)
    _, same, metrics = operator((), state, jnp.asarray(100), jnp.asarray(199))
    assert not bool(metrics["heads_shifted"])
    np.testing.assert_array_equal(same.online.head.linear.weight, state.online.head.linear.weight)
    # A crossing with several steps per cycle (N = 8 envs: 96 -> 104) still shifts.
    _, _, metrics = operator((), state, jnp.asarray(96), jnp.asarray(104))
    assert bool(metrics["heads_shifted"])
    # Before the first gradient step there is no shift (heads stay distinct).
    fresh = eqx.tree_at(lambda s: s.updates, state, jnp.asarray(0, jnp.int32))
    _, same, metrics = operator((), fresh, jnp.asarray(99), jnp.asarray(100))
    assert not bool(metrics["heads_shifted"])
    np.testing.assert_array_equal(same.online.head.linear.weight, state.online.head.linear.weight)


def test_shift_moves_head_masks_with_the_weights():
    state = _stacked_state(1, 3, 2, 4, masked=True)
    _, shifted, _ = SharedTargetShift(period=10)((), state, jnp.asarray(9), jnp.asarray(10))
    old, new = np.asarray(state.masks.head.linear.weight), np.asarray(shifted.masks.head.linear.weight)
    np.testing.assert_array_equal(new[:, :4], old[:, 2:])
    np.testing.assert_array_equal(new[:, 4:], old[:, 4:])
    assert shifted.masks.head.linear.bias is None


def test_shift_with_one_iteration_copies_online_into_target():
    state = _stacked_state(1, 2, 3, 4)  # K = 1: heads [Q_bar_0, Q_1]
    _, shifted, _ = SharedTargetShift(period=5)((), state, jnp.asarray(4), jnp.asarray(5))
    w = np.asarray(shifted.online.head.linear.weight)
    np.testing.assert_array_equal(w[:, :3], w[:, 3:])
    np.testing.assert_array_equal(w[:, 3:], np.asarray(state.online.head.linear.weight)[:, 3:])


def test_shift_refuses_a_single_head_network():
    learner = linear_learner(3, 1, 2)
    with pytest.raises(ValueError, match="K \\+ 1 >= 2"):
        SharedTargetShift(period=1)((), learner.init(jax.random.key(0)), jnp.asarray(0), jnp.asarray(1))


# ---------------------------------------------------------------- K = 1


def test_one_iteration_trains_head_one_on_head_zero():
    actions, features = 2, 3
    learner = linear_learner(features, 2, actions, optax.sgd(0.1))
    state = learner.init(jax.random.key(1))
    batch = random_batch(jax.random.key(2), 8, features, actions)
    new_state, metrics = eqx.filter_jit(learner.update)(state, batch)
    assert metrics["head_losses"].shape == (1, 1)
    assert np.isfinite(metrics["loss"]).all()
    w0, w1 = state.online.head.linear.weight, new_state.online.head.linear.weight
    np.testing.assert_array_equal(w1[:, :actions], w0[:, :actions])
    assert not np.allclose(w1[:, actions:], w0[:, actions:])
    # Acting is greedy w.r.t. head 1 (the only online head).
    obs = jax.random.normal(jax.random.key(3), (64, features))
    values = learner.greedy_values(state, obs, jax.random.key(4))
    full = eqx.filter_vmap(lambda net: net.batched(obs))(state.online)[0]  # (N, 2, A)
    np.testing.assert_array_equal(values, full[:, 1])


# ---------------------------------------------------------------- acting


def test_acting_head_is_uniform_over_online_heads_and_redrawn_each_step():
    # Head h prefers action h (one-hot bias, zero kernel), so the greedy action names
    # the head that was drawn; head 0 must never be drawn.
    heads = 5  # K = 4
    learner = linear_learner(2, heads, heads)
    weight = np.zeros((heads * heads, 2))
    bias = np.eye(heads).reshape(-1)
    state = with_head(learner.init(jax.random.key(0)), weight, bias)
    obs = jnp.zeros((4_000, 2))
    act = eqx.filter_jit(learner.act)
    first = np.asarray(act(state, obs, jax.random.key(1), jnp.asarray(0.0)))
    second = np.asarray(act(state, obs, jax.random.key(2), jnp.asarray(0.0)))
    draws = np.concatenate([first, second])
    counts = np.bincount(draws, minlength=heads)
    assert counts[0] == 0
    assert chisquare(counts[1:]).pvalue > 1e-3
    # A fresh draw per environment per step: the two steps disagree about 3/4 of the time.
    assert 0.7 < np.mean(first != second) < 0.8


def test_epsilon_greedy_on_top_of_the_drawn_head():
    heads = 3
    learner = linear_learner(2, heads, heads)
    state = with_head(learner.init(jax.random.key(0)), np.zeros((heads * heads, 2)), np.eye(heads).reshape(-1))
    actions = np.asarray(eqx.filter_jit(learner.act)(state, jnp.zeros((6_000, 2)), jax.random.key(3), jnp.asarray(1.0)))
    counts = np.bincount(actions, minlength=heads)
    assert counts[0] > 0  # random actions cover action 0, which no online head prefers
    assert chisquare(counts).pvalue > 1e-3


# ---------------------------------------------------------------- LayerNorm placement and torsos


def test_mlp_layer_norm_before_each_relu():
    torso = MLPTorso(3, (16, 16), layer_norm=True, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (3,))
    out = torso(x)
    assert np.all(np.asarray(out) >= 0) and np.any(np.asarray(out) == 0)  # ReLU comes last
    for i in range(2):
        # LayerNorm right after layer i removes an offset added to all of its units.
        shifted = eqx.tree_at(lambda t, i=i: t.layers[i].bias, torso, torso.layers[i].bias + 3.0)
        np.testing.assert_allclose(shifted(x), out, atol=1e-4)
    plain = MLPTorso(3, (16, 16), layer_norm=False, key=jax.random.key(0))
    moved = eqx.tree_at(lambda t: t.layers[1].bias, plain, plain.layers[1].bias + 3.0)
    assert not np.allclose(moved(x), plain(x), atol=1e-2)


def test_channel_norm_normalises_each_position_over_channels():
    x = jax.random.normal(jax.random.key(0), (6, 5, 4)) * 3 + jnp.arange(4.0)
    y = np.asarray(channel_norm(eqx.nn.LayerNorm(6), x))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=0), 1.0, atol=1e-3)


def test_impala_residual_block_normalises_before_each_relu():
    block = ResidualBlock(4, layer_norm=True, init="xavier_uniform", key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 6, 6))
    residual = block(x) - x
    # Scaling the block input leaves the residual branch unchanged (LN before ReLU 1).
    np.testing.assert_allclose(block(5.0 * x) - 5.0 * x, residual, atol=1e-3)
    # Scaling the first convolution leaves it unchanged too (LN before ReLU 2).
    conv = block.convs[0]
    scaled = eqx.tree_at(lambda b: (b.convs[0].weight, b.convs[0].bias), block, (conv.weight * 4, conv.bias * 4))
    np.testing.assert_allclose(scaled(x) - x, residual, atol=1e-3)
    plain = ResidualBlock(4, layer_norm=False, init="xavier_uniform", key=jax.random.key(0))
    assert not np.allclose(plain(5.0 * x) - 5.0 * x, plain(x) - x, atol=1e-2)


@pytest.mark.parametrize("kind", ["nature_cnn", "impala"])
def test_conv_torsos_layer_norm_layout_and_scale_invariance(kind):
    if kind == "impala":
        obs_shape = (4, 16, 16)
        torso = ImpalaTorso(obs_shape, channels=(8, 16, 16), dense_units=32, layer_norm=True, key=jax.random.key(0))
        norms = [n for s in torso.stacks for b in s.blocks for n in b.norms] + [torso.final_norm, torso.dense_norm]
        expected = [(8,)] * 4 + [(16,)] * 8 + [(16,), (32,)]
        first = lambda t: t.stacks[0].conv  # noqa: E731
    else:
        obs_shape = (4, 44, 44)  # the smallest comfortable size for 8/4, 4/2, 3/1 convolutions
        torso = NatureCNNTorso(obs_shape, dense_units=32, layer_norm=True, key=jax.random.key(0))
        norms = [*torso.conv_norms, torso.dense_norm]
        expected = [(32,), (64,), (64,), (32,)]
        first = lambda t: t.convs[0]  # noqa: E731
    assert [n.shape for n in norms] == expected  # over the feature axis only
    frames = jax.random.randint(jax.random.key(1), obs_shape, 0, 256).astype(jnp.uint8)
    forward = eqx.filter_jit(lambda t, x: t(x))
    out = np.asarray(forward(torso, frames))
    assert out.shape == (32,) and np.all(out >= 0)  # ReLU comes last
    if kind == "nature_cnn":
        # The first convolution feeds a LayerNorm: scaling it changes nothing.
        conv = first(torso)
        scaled = eqx.tree_at(lambda t: (first(t).weight, first(t).bias), torso, (conv.weight * 3, conv.bias * 3))
        np.testing.assert_allclose(forward(scaled, frames), out, atol=1e-3)


def test_impala_shapes_and_same_pooling():
    x = jnp.arange(2 * 5 * 5, dtype=jnp.float32).reshape(2, 5, 5)
    pooled = max_pool_same(x)
    assert pooled.shape == (2, 3, 3)
    # TF/Flax SAME for size 5, window 3, stride 2: pad 1 each side; windows start at -1, 1, 3.
    np.testing.assert_array_equal(pooled[0, 0], [6, 8, 9])
    network_config = load_pipeline("isdqn-impala-atari")[0].network
    factory = make_network_factory(network_config, (4, 84, 84), heads=10, num_actions=6)
    # Shapes only (no compute): 84 -> 42 -> 21 -> 11 after the three SAME pools.
    network = eqx.filter_eval_shape(factory, jax.random.key(0))
    out = eqx.filter_eval_shape(lambda n, x: n(x), network, jax.ShapeDtypeStruct((4, 84, 84), jnp.uint8))
    assert out.shape == (10, 6)
    assert network.torso.dense.weight.shape == (512, 64 * 11 * 11)
    assert isinstance(network.torso, ImpalaTorso) and network.torso.dense_norm is not None


# ---------------------------------------------------------------- pipeline files and building


def test_lunarlander_pipeline_has_the_paper_settings():
    config, _, _ = load_pipeline("isdqn-lunarlander")
    assert config.algorithm == "isdqn" and config.env.task_id == "LunarLander-v3"
    assert (config.network.kind, config.network.hidden, config.network.iterations) == ("mlp", (100, 100), 3)
    assert config.learner.target == "online" and config.learner.learning_rate == 3e-4
    assert (config.learner.update_every, config.learner.warmup, config.learner.gamma) == (1, 1_000, 0.99)
    assert (config.replay.capacity, config.replay.batch_size) == (10_000, 32)
    assert (config.exploration.start, config.exploration.end, config.exploration.decay_steps) == (1.0, 0.01, 1_000)
    assert config.run.total_steps == 200_000
    assert [op.kind for op in config.operators] == ["shared_target_shift"]
    assert config.operator("shared_target_shift").period == 200
    assert num_heads(config) == 4
    (operator,) = build_pipeline(config).operators
    assert isinstance(operator, SharedTargetShift) and operator.period == 200


def test_atari_pipelines_have_the_authors_settings():
    config, _, _ = load_pipeline("isdqn-atari")
    assert (config.network.kind, config.network.layer_norm, config.network.iterations) == ("nature_cnn", True, 9)
    assert config.operator("shared_target_shift").period == 8_000 and config.learner.update_every == 4
    assert (config.learner.learning_rate, config.learner.adam_eps) == (6.25e-5, 1.5e-4)
    assert (config.replay.capacity, config.learner.warmup) == (1_000_000, 20_000)
    assert config.exploration.decay_steps == 250_000
    assert config.env.atari.repeat_action_probability == 0.25 and config.learner.n_step == 1
    assert config.learner.online_forward == "separate"
    impala, _, _ = load_pipeline("isdqn-impala-atari")
    assert impala.network.kind == "impala" and impala.network.iterations == 9 and impala.network.layer_norm


@pytest.mark.parametrize(
    "pipeline, overrides, key",
    [
        ("dqn-cartpole", ["--network.iterations", "3"], "network.iterations"),
        ("isdqn-cartpole", ["--network.iterations", "0"], "operators.shared_target_shift.kind"),
        ("isdqn-cartpole", ["--learner.target", "network"], "operators.shared_target_shift.kind"),
        ("isdqn-cartpole", ["--operators.shared_target_shift.period", "0"], "operators.shared_target_shift.period"),
        ("isdqn-cartpole", ["--network.iterations", "-1"], "network.iterations"),
        ("isdqn-impala-atari", ["--network.impala-channels", "16", "0"], "network.impala_channels"),
    ],
)
def test_inconsistent_isql_settings_are_one_line_errors(pipeline, overrides, key):
    with pytest.raises(ConfigError) as error:
        build_pipeline(load_pipeline(pipeline, overrides)[0])
    message = str(error.value)
    assert error.value.key == key and "\n" not in message and key in message


def test_one_iteration_is_a_valid_pipeline():
    config, _, _ = load_pipeline("isdqn-cartpole", ["--network.iterations", "1"])
    assert num_heads(config) == 2


def test_cartpole_pipeline_learns_and_shifts_in_jit():
    config, _, _ = load_pipeline(
        "isdqn-cartpole",
        ["--learner.warmup", "100", "--operators.shared_target_shift.period", "50", "--replay.capacity", "500"],
    )
    pipeline = build_pipeline(config)
    assert pipeline.learner.make_network(jax.random.key(0)).num_heads == 4
    state = pipeline.init(jax.random.key(0))
    assert [type(op) for op in pipeline.operators] == [SharedTargetShift]
    collect = eqx.filter_jit(lambda s: jax.lax.scan(lambda c, _: pipeline.cycle(c, False), s, None, length=99))
    learn = eqx.filter_jit(lambda s: jax.lax.scan(lambda c, _: pipeline.cycle(c, True), s, None, length=301))
    state, _ = collect(state)
    before = state.learner.online.head.linear.weight
    state, metrics = learn(state)
    # Learning starts at step 100; shifts at 100, 150, ..., 400.
    assert int(state.env_steps) == 400 and int(state.learner.updates) == 301
    assert int(np.sum(metrics["heads_shifted"])) == 7
    assert metrics["head_losses"].shape == (301, 1, 3) and np.isfinite(metrics["head_losses"]).all()
    after = np.asarray(state.learner.online.head.linear.weight)
    assert not np.allclose(after, before)
    # The last shift (at step 400) left heads K - 1 and K equal.
    np.testing.assert_array_equal(after[:, 4:6], after[:, 6:8])
    # The runner logs each online head's TD loss and counts the shifts.
    record, _ = summarize_chunk(jax.device_get(metrics))
    assert {f"heads/loss_{k}" for k in (1, 2, 3)} <= set(record)
    assert record["operators/heads_shifted"] == 7
    # train/loss is the mean over the trained heads (comparable with DQN's one head).
    np.testing.assert_allclose(np.mean([record[f"heads/loss_{k}"] for k in (1, 2, 3)]), record["train/loss"], rtol=1e-5)


def test_resolved_isql_pipeline_round_trips(tmp_path):
    from sparseq.pipeline.config.dump import to_toml

    config, _, _ = load_pipeline("isdqn-impala-atari", ["--network.iterations", "4"])
    path = tmp_path / "pipeline.toml"
    path.write_text(to_toml(config))
    reloaded, _, _ = load_pipeline(str(path))
    assert reloaded == config
