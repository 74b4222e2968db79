"""Q-learner knobs: Double DQN's bootstrap checked by hand, gradient clipping, the
optimizers and learning-rate schedules, the training diagnostics, the loss metrics
of several heads, the soft (Polyak) target update, and the rules that refuse bad keys."""

import dataclasses
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparseq.pipeline.config import ConfigError, load_pipeline
from sparseq.pipeline.config.build import build_pipeline
from sparseq.stages.learners import QLearner, QLearnerOptions
from sparseq.stages.learners.losses import double_td_targets, td_targets
from sparseq.stages.learners.optimizers import learning_rate, make_optimizer, total_updates
from sparseq.stages.learners.population import select_member
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.stages.operators import Polyak, TargetSync
from sparseq.stages.sparsity import apply_masks
from sparseq.types import Batch

REPO = Path(__file__).resolve().parents[1]
OBS, ACTIONS, BATCH = 3, 2, 5


@pytest.fixture(autouse=True)
def in_tmp_folder(tmp_path, monkeypatch):
    """Pipeline names resolve against the repository; test files live in tmp_path."""
    monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
    monkeypatch.chdir(tmp_path)


def make_network(key):
    torso_key, head_key = jax.random.split(key)
    return QNetwork(MLPTorso(OBS, (8,), key=torso_key), 1, ACTIONS, "lecun_normal", key=head_key)


def make_linear(heads: int = 1, features: int = 1, actions: int = ACTIONS):
    """Q(s) = W s + b read as (heads, actions): no hidden layer."""

    def make(key):
        return QNetwork(MLPTorso(features, (), key=key), heads, actions, "lecun_normal", key=key)

    return make


def make_batch(seed: int = 0) -> Batch:
    k = jax.random.split(jax.random.key(seed), 4)
    return Batch(
        obs=jax.random.normal(k[0], (BATCH, OBS)),
        action=jax.random.randint(k[1], (BATCH,), 0, ACTIONS),
        reward=jax.random.normal(k[2], (BATCH,)),
        discount=jnp.full((BATCH,), 0.9),
        next_obs=jax.random.normal(k[3], (BATCH, OBS)),
    )


def with_linear(state, online_w, online_b, target_w=None, target_b=None):
    """Sets the stacked online head (P, H*A, F), (P, H*A) and the target head."""
    state = eqx.tree_at(
        lambda s: (s.online.head.linear.weight, s.online.head.linear.bias),
        state,
        (jnp.asarray(online_w, jnp.float32), jnp.asarray(online_b, jnp.float32)),
    )
    if target_w is not None:
        state = eqx.tree_at(
            lambda s: (s.target.head.linear.weight, s.target.head.linear.bias),
            state,
            (jnp.asarray(target_w, jnp.float32), jnp.asarray(target_b, jnp.float32)),
        )
    return state


def param_leaves(network) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(network, eqx.is_array))]


def global_norm(leaves) -> float:
    return float(np.sqrt(sum(np.sum(np.square(x.astype(np.float64))) for x in leaves)))


def change(before, after) -> list[np.ndarray]:
    return [b - a for a, b in zip(param_leaves(before), param_leaves(after))]


# ---------------------------------------------------------------- Double DQN

# One sample: s = 2, a = 0, r = 1, discount 0.5, s' = 1 (F = 1, A = 2).
#   online Q(s)  = (1 * 2 + 0, -1 * 2 + 0) = (2, -2); online Q(s') = (1, -1) + (0, 3) = (1, 2)
#   target Q(s') = (5, 3)
#   plain DQN:  y = 1 + 0.5 * max(5, 3) = 3.5            loss (2 - 3.5)^2 = 2.25
#   Double DQN: y = 1 + 0.5 * Q_target(s', argmax(1, 2) = 1) = 1 + 1.5 = 2.5   loss 0.25
ONLINE_W, ONLINE_B = [[[1.0], [-1.0]]], [[0.0, 3.0]]
TARGET_W, TARGET_B = [[5.0], [3.0]], [0.0, 0.0]
ONE = Batch(
    obs=jnp.array([[2.0]]),
    action=jnp.array([0]),
    reward=jnp.array([1.0]),
    discount=jnp.array([0.5]),
    next_obs=jnp.array([[1.0]]),
)


@pytest.mark.parametrize(("double_q", "target", "loss"), [(False, 3.5, 2.25), (True, 2.5, 0.25)])
@pytest.mark.parametrize("forward", ["concat", "separate"])
def test_double_dqn_target_by_hand(double_q, target, loss, forward):
    # SGD with learning rate -1 adds the raw gradient: d/dw_{a=0} (w s + b - y)^2 = 2 (Q - y) s.
    learner = QLearner(make_linear(), optax.sgd(-1.0), ACTIONS, double_q=double_q, online_forward=forward)
    state = with_linear(learner.init(jax.random.key(0)), ONLINE_W, ONLINE_B, TARGET_W, TARGET_B)
    new_state, metrics = eqx.filter_jit(learner.update)(state, ONE)
    np.testing.assert_allclose(metrics["loss"][0], loss, rtol=1e-6)
    grad_w = np.asarray(new_state.online.head.linear.weight - state.online.head.linear.weight)[0, :, 0]
    np.testing.assert_allclose(grad_w, [2 * (2.0 - target) * 2.0, 0.0], rtol=1e-6)
    assert bool(jnp.all(new_state.target.head.linear.weight == state.target.head.linear.weight))


def test_double_dqn_uses_each_members_own_argmax():
    # Member 1 prefers action 0 at s' (online Q(s') = (4, 2)): y = 1 + 0.5 * 5 = 3.5.
    learner = QLearner(make_linear(), optax.sgd(0.0), ACTIONS, population=2, double_q=True)
    weight = [[[1.0], [-1.0]], [[1.0], [-1.0]]]
    bias = [[0.0, 3.0], [3.0, 3.0]]
    state = with_linear(learner.init(jax.random.key(0)), weight, bias, TARGET_W, TARGET_B)
    _, metrics = eqx.filter_jit(learner.update)(state, ONE)
    # member 0: Q(s, 0) = 2, y = 2.5; member 1: Q(s, 0) = 5, y = 3.5
    np.testing.assert_allclose(metrics["loss"], [0.25, 2.25], rtol=1e-6)


def test_double_td_targets_per_head():
    reward, discount = jnp.asarray([1.0]), jnp.asarray([0.5])
    evaluator = jnp.asarray([[[5.0, 3.0], [0.0, 8.0]]])  # (B=1, H'=2, A=2)
    selector = jnp.asarray([[[1.0, 2.0], [7.0, 6.0]]])  # head 0 picks action 1, head 1 action 0
    np.testing.assert_allclose(double_td_targets(reward, discount, evaluator, selector), [[2.5, 1.0]])
    # Selecting with the evaluator itself is plain Q-learning.
    np.testing.assert_allclose(
        double_td_targets(reward, discount, evaluator, evaluator), td_targets(reward, discount, evaluator)
    )


def test_double_q_needs_a_target_network():
    with pytest.raises(ValueError, match="target='network'"):
        QLearner(make_linear(), optax.sgd(0.1), ACTIONS, target="online", double_q=True)
    with pytest.raises(ConfigError) as error:
        load_pipeline("tfdqn-cartpole", ["--learner.double-q"])
    assert str(error.value) == "command line: learner.double_q = True: needs target='network'"


# ---------------------------------------------------------------- clipping


def sgd_learner(max_grad_norm: float, **kwargs) -> QLearner:
    options = QLearnerOptions(optimizer="sgd", learning_rate=1.0, max_grad_norm=max_grad_norm)
    return QLearner(make_network, make_optimizer(options, 10), ACTIONS, **kwargs)


def test_clipping_bounds_the_update():
    batch = make_batch()
    batch = batch._replace(reward=batch.reward * 10)
    steps = {}
    for clip in (0.0, 0.1):
        learner = sgd_learner(clip)
        state = learner.init(jax.random.key(0))
        new_state, _ = eqx.filter_jit(learner.update)(state, batch)
        steps[clip] = change(state.online, new_state.online)
    assert global_norm(steps[0.0]) > 1.0  # the test can tell clipped from unclipped
    assert global_norm(steps[0.1]) <= 0.1 + 1e-6
    # Clipping rescales the gradient; it keeps its direction.
    scale = 0.1 / global_norm(steps[0.0])
    for clipped, free in zip(steps[0.1], steps[0.0]):
        np.testing.assert_allclose(clipped, scale * free, rtol=1e-4, atol=1e-7)


def test_masked_clipping_counts_the_kept_weights_only():
    batch = make_batch()
    batch = batch._replace(reward=batch.reward * 10)
    norms = {}
    for mask_gradients in (False, True):
        learner = sgd_learner(0.1, masked=True, mask_gradients=mask_gradients)
        state = learner.init(jax.random.key(0))
        masks = jax.tree.map(
            lambda m: None if m is None else jax.random.uniform(jax.random.key(1), m.shape) < 0.3,
            state.masks,
            is_leaf=lambda x: x is None,
        )
        state = eqx.tree_at(
            lambda s: (s.online, s.masks), state, (apply_masks(state.online, masks), masks), is_leaf=lambda x: x is None
        )
        new_state, _ = eqx.filter_jit(learner.update)(state, batch)
        norms[mask_gradients] = global_norm(change(state.online, new_state.online))  # pruned weights stay 0
    np.testing.assert_allclose(norms[True], 0.1, rtol=1e-4)  # the kept weights' gradient, clipped
    assert norms[False] < 0.09  # the pruned weights' gradients took part of the norm


def test_from_options_masks_gradients_only_when_clipping():
    config = load_pipeline("dqn-cartpole", ["--learner.masked"])[0]
    assert not build_pipeline(config).learner.mask_gradients
    config = load_pipeline("dqn-cartpole", ["--learner.masked", "--learner.max-grad-norm", "10"])[0]
    assert build_pipeline(config).learner.mask_gradients


# ---------------------------------------------------------------- optimizers and schedules


def test_default_optimizer_is_exactly_adam():
    options = QLearnerOptions(learning_rate=1e-2, adam_eps=1e-3)
    params = {"w": jnp.asarray([1.0, -2.0, 0.5])}
    mine, reference = make_optimizer(options, 100), optax.adam(1e-2, eps=1e-3)
    assert jax.tree.structure(mine.init(params)) == jax.tree.structure(reference.init(params))
    states = [mine.init(params), reference.init(params)]
    for i in range(3):
        grads = {"w": jnp.asarray([0.3, -0.1, 2.0]) * (i + 1)}
        (u1, states[0]), (u2, states[1]) = mine.update(grads, states[0], params), reference.update(grads, states[1])
        np.testing.assert_array_equal(u1["w"], u2["w"])


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop", "sgd"])
@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_every_optimizer_and_schedule_trains(optimizer, schedule):
    options = QLearnerOptions(
        optimizer=optimizer,
        learning_rate=1e-2,
        lr_schedule=schedule,
        lr_end=1e-3 if schedule != "constant" else 0.0,
        weight_decay=1e-2 if optimizer == "adamw" else 0.0,
        max_grad_norm=1.0,
    )
    learner = QLearner(make_network, make_optimizer(options, 5), ACTIONS)
    state = learner.init(jax.random.key(0))
    update = eqx.filter_jit(learner.update)
    new_state = state
    for i in range(5):
        new_state, metrics = update(new_state, make_batch(i))
        assert np.isfinite(metrics["loss"]).all()
    moved = change(state.online, new_state.online)
    assert global_norm(moved) > 0 and all(np.isfinite(m).all() for m in moved)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_reaches_lr_end_at_the_last_update(schedule):
    options = QLearnerOptions(learning_rate=1e-2, lr_schedule=schedule, lr_end=1e-4)
    lr = learning_rate(options, 50)
    assert float(lr(0)) == pytest.approx(1e-2)
    assert float(lr(49)) == pytest.approx(1e-4, rel=1e-5)  # optax counts the updates before
    assert 1e-4 < float(lr(25)) < 1e-2
    assert learning_rate(QLearnerOptions(learning_rate=1e-2), 50) == 1e-2
    # SGD: the last of the run's 50 steps moves by -lr_end * g.
    optimizer = make_optimizer(dataclasses.replace(options, optimizer="sgd"), 50)
    params, grads = {"w": jnp.ones(2)}, {"w": jnp.asarray([1.0, -2.0])}
    opt_state = optimizer.init(params)
    for _ in range(50):
        step, opt_state = optimizer.update(grads, opt_state, params)
    np.testing.assert_allclose(step["w"], -1e-4 * grads["w"], rtol=1e-5)


def test_schedule_spans_the_runs_gradient_steps():
    assert total_updates(100_000, 1_000, 1) == 99_000
    assert total_updates(100_000, 1_000, 4) == 24_750
    assert total_updates(500, 1_000, 1) == 1  # never below one step
    overrides = ["--run.total-steps", "1100", "--learner.warmup", "1000", "--learner.optimizer", "sgd"]
    overrides += ["--learner.lr-schedule", "linear", "--learner.learning-rate", "0.5", "--learner.lr-end", "0.01"]
    optimizer = build_pipeline(load_pipeline("dqn-cartpole", overrides)[0]).learner.optimizer
    params, grads = {"w": jnp.ones(1)}, {"w": jnp.ones(1)}
    opt_state = optimizer.init(params)
    steps = []
    for _ in range(100):  # (1100 - 1000) // 1 gradient steps
        step, opt_state = optimizer.update(grads, opt_state, params)
        steps.append(float(step["w"][0]))
    assert steps[0] == pytest.approx(-0.5) and steps[-1] == pytest.approx(-0.01, rel=1e-4)


# ---------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["--learner.optimizer", "adagrad"],
            "learner.optimizer = 'adagrad': must be one of 'adam', 'adamw', 'rmsprop', 'sgd'",
        ),
        (
            ["--learner.lr-schedule", "step"],
            "learner.lr_schedule = 'step': must be one of 'constant', 'linear', 'cosine'",
        ),
        (["--learner.weight-decay", "0.01"], "learner.weight_decay = 0.01: needs optimizer 'adamw'"),
        (
            ["--learner.optimizer", "adamw", "--learner.weight-decay", "-1"],
            "learner.weight_decay = -1.0: must be >= 0",
        ),
        (["--learner.lr-end", "0.001"], "learner.lr_end = 0.001: needs lr_schedule 'linear' or 'cosine'"),
        (["--learner.lr-schedule", "linear", "--learner.lr-end", "-1"], "learner.lr_end = -1.0: must be >= 0"),
        (["--learner.max-grad-norm", "-1"], "learner.max_grad_norm = -1.0: must be >= 0 (0 = no clipping)"),
        (["--operators.target_sync.period", "0"], "operators.target_sync.period = 0: must be >= 1"),
    ],
)
def test_bad_learner_keys_are_refused(overrides, expected):
    with pytest.raises(ConfigError) as error:
        load_pipeline("dqn-cartpole", overrides)
    assert str(error.value) == f"command line: {expected}"


def test_new_keys_load_from_a_pipeline_file(tmp_path):
    (tmp_path / "knobs.toml").write_text(
        'extends = "dqn-cartpole"\n[learner]\ndouble_q = true\noptimizer = "adamw"\nweight_decay = 1e-4\n'
        'lr_schedule = "cosine"\nlr_end = 1e-5\nmax_grad_norm = 10.0\ndiagnostics = true\n'
    )
    config = load_pipeline(tmp_path / "knobs.toml")[0]
    learner = build_pipeline(config).learner
    assert learner.double_q and learner.diagnostics and not learner.mask_gradients
    assert (config.learner.optimizer, config.learner.lr_schedule, config.learner.max_grad_norm) == (
        "adamw",
        "cosine",
        10.0,
    )


# ---------------------------------------------------------------- loss metrics and diagnostics


def test_iterated_loss_metrics_mean_and_sum():
    learner = QLearner(make_linear(heads=4, features=5, actions=3), optax.sgd(0.1), 3, target="online")
    state = learner.init(jax.random.key(0))
    k = jax.random.split(jax.random.key(1), 4)
    batch = Batch(
        obs=jax.random.normal(k[0], (16, 5)),
        action=jax.random.randint(k[1], (16,), 0, 3),
        reward=jax.random.normal(k[2], (16,)),
        discount=jnp.full((16,), 0.99),
        next_obs=jax.random.normal(k[3], (16, 5)),
    )
    new_state, metrics = eqx.filter_jit(learner.update)(state, batch)
    heads = np.asarray(metrics["head_losses"])
    assert heads.shape == (1, 3) and metrics["loss"].shape == metrics["loss_sum"].shape == (1,)
    np.testing.assert_allclose(metrics["loss"], heads.mean(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(metrics["loss_sum"], heads.sum(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(new_state.loss_sums, metrics["loss_sum"], rtol=0)  # selection sums stay sums
    assert not {"q_mean", "q_max", "td_error_std", "grad_norm"} & set(metrics)


def test_diagnostics_by_hand_and_free_of_side_effects():
    # Two samples on the double-DQN network above, plain DQN targets (target network).
    batch = Batch(
        obs=jnp.array([[2.0], [1.0]]),
        action=jnp.array([0, 1]),
        reward=jnp.array([1.0, 0.0]),
        discount=jnp.array([0.5, 0.0]),
        next_obs=jnp.array([[1.0], [1.0]]),
    )
    # sample 0: Q(s) = (2, -2), y = 3.5, error 1.5;  sample 1: Q(s) = (1, 2), a = 1, y = 0, error -2
    results = {}
    for diagnostics in (False, True):
        learner = QLearner(make_linear(), optax.sgd(0.1), ACTIONS, diagnostics=diagnostics)
        state = with_linear(learner.init(jax.random.key(0)), ONLINE_W, ONLINE_B, TARGET_W, TARGET_B)
        results[diagnostics] = eqx.filter_jit(learner.update)(state, batch)
    (plain_state, plain), (state, metrics) = results[False], results[True]
    for x, y in zip(jax.tree.leaves(plain_state), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert set(metrics) == set(plain) | {"q_mean", "q_max", "td_error_std", "grad_norm"}
    for name in ("q_mean", "q_max", "td_error_std", "grad_norm"):
        assert metrics[name].shape == (1,)
    np.testing.assert_allclose(metrics["q_mean"], [(2.0 + 2.0) / 2], rtol=1e-6)
    np.testing.assert_allclose(metrics["q_max"], [2.0], rtol=1e-6)
    np.testing.assert_allclose(metrics["td_error_std"], [np.std([1.5, -2.0])], rtol=1e-6)
    # loss = mean((Q - y)^2): dL/dQ_b = (Q_b - y_b) (2 / B); weight grads times s, bias grads times 1.
    # sample 0 -> (w_0, b_0): -1.5 * 2 = -3, -1.5;  sample 1 -> (w_1, b_1): 2 * 1 = 2, 2
    np.testing.assert_allclose(metrics["grad_norm"], [np.sqrt(9 + 2.25 + 4 + 4)], rtol=1e-6)


# ---------------------------------------------------------------- polyak


def dqn_state(population: int = 1):
    learner = QLearner(make_network, optax.adam(1e-3), ACTIONS, population=population)
    state = learner.init(jax.random.key(0))
    leaves, treedef = jax.tree.flatten(state.online)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    online = jax.tree.unflatten(treedef, [x + jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    state = eqx.tree_at(lambda s: (s.online, s.loss_sums), state, (online, jnp.full((population,), 5.0)))
    return learner, state


def test_polyak_soft_update():
    _, state = dqn_state(population=2)
    state = eqx.tree_at(lambda s: s.acting_member, state, jnp.asarray(1, jnp.int32))
    operator = Polyak(tau=0.25, period=10)
    op_state = operator.init(state)
    _, same, metrics = operator(op_state, state, jnp.asarray(10), jnp.asarray(19))
    assert not bool(metrics["target_updated"])
    for x, y in zip(jax.tree.leaves(same.target), jax.tree.leaves(state.target)):
        np.testing.assert_array_equal(x, y)
    _, moved, metrics = eqx.filter_jit(operator)(op_state, state, jnp.asarray(19), jnp.asarray(20))
    assert bool(metrics["target_updated"])
    acting = select_member(state.online, 1)
    for new, online, old in zip(*(jax.tree.leaves(t) for t in (moved.target, acting, state.target))):
        np.testing.assert_allclose(new, 0.25 * online + 0.75 * old, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(moved.loss_sums, [5.0, 5.0])  # left to the selection operators
    for x, y in zip(jax.tree.leaves(moved.online), jax.tree.leaves(state.online)):
        np.testing.assert_array_equal(x, y)


def test_polyak_with_tau_one_is_a_hard_copy():
    _, state = dqn_state()
    _, soft, _ = Polyak(tau=1.0)((), state, jnp.asarray(0), jnp.asarray(1))
    _, hard, _ = TargetSync(period=1)((), state, jnp.asarray(0), jnp.asarray(1))
    for x, y in zip(jax.tree.leaves(soft.target), jax.tree.leaves(hard.target)):
        np.testing.assert_array_equal(x, y)


def test_polyak_needs_a_target_network():
    learner = QLearner(make_network, optax.adam(1e-3), ACTIONS, target="online")
    with pytest.raises(ValueError, match="target='network'"):
        Polyak().init(learner.init(jax.random.key(0)))


POLYAK = 'extends = "dqn-cartpole"\n\n[[operators]]\nkind = "polyak"\ntau = 0.01\nperiod = 4\n'


def test_polyak_pipeline_builds_and_runs(tmp_path):
    (tmp_path / "polyak.toml").write_text(POLYAK)
    overrides = ["--learner.warmup", "8", "--replay.batch-size", "4", "--network.hidden", "8"]
    pipeline = build_pipeline(load_pipeline(tmp_path / "polyak.toml", overrides)[0])
    assert [type(op) for op in pipeline.operators] == [Polyak]
    assert (pipeline.operators[0].tau, pipeline.operators[0].period) == (0.01, 4)
    collect = eqx.filter_jit(lambda s: jax.lax.scan(lambda c, _: pipeline.cycle(c, False), s, None, length=8))
    learn = eqx.filter_jit(lambda s: jax.lax.scan(lambda c, _: pipeline.cycle(c, True), s, None, length=16))
    state, _ = collect(pipeline.init(jax.random.key(0)))
    before = state.learner.target
    state, metrics = learn(state)
    # Steps 9..24: soft updates at 12, 16, 20 and 24.
    assert int(np.sum(metrics["target_updated"])) == 4 and int(state.learner.updates) == 16
    assert not np.allclose(state.learner.target.head.linear.weight, before.head.linear.weight)


def test_polyak_and_target_sync_both_own_the_target_update(tmp_path):
    (tmp_path / "both.toml").write_text(POLYAK + '\n[[operators]]\nkind = "target_sync"\nperiod = 100\n')
    with pytest.raises(ConfigError) as error:
        load_pipeline(tmp_path / "both.toml")
    message = str(error.value)
    assert message == (
        "both.toml: operators.target_sync.kind = 'target_sync': "
        "a second operator for the target update: operator 0 (polyak) already does it"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [("tau", "0", "must be in (0, 1]"), ("tau", "1.5", "must be in (0, 1]"), ("period", "0", "must be >= 1")],
)
def test_bad_polyak_options(tmp_path, key, value, expected):
    (tmp_path / "polyak.toml").write_text(POLYAK)
    with pytest.raises(ConfigError) as error:
        load_pipeline(tmp_path / "polyak.toml", [f"--operators.polyak.{key}", value])
    assert str(error.value).endswith(f"operators.polyak.{key} = {float(value) if key == 'tau' else value}: {expected}")
