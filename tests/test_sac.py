"""Soft actor-critic, unit level: the losses and the squashed Gaussian against hand and
numerical references, the BatchNorm critic's joint-batch statistics, iS-SAC's head
shift, masks that stay exactly zero in EauDeSAC and PolyPruneSAC, and the one-line
errors for pipelines that cannot work with continuous (or discrete) actions."""

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import integrate
from scipy.stats import norm

from conftest import REPO
from sparseq.pipeline.config import load_pipeline
from sparseq.pipeline.config.build import build_pipeline
from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.sac_losses import (
    actor_loss,
    critic_losses,
    sample_tanh_gaussian,
    soft_td_targets,
    tanh_gaussian_log_prob,
    tanh_log_det,
    temperature_loss,
    to_bounds,
)
from sparseq.stages.networks.batch_norm import BatchNorm
from sparseq.stages.networks.critic import CriticNetwork
from sparseq.stages.operators import PolyPrune, PruneSelect, SharedTargetShift
from sparseq.stages.operators.match_sparsity import MatchSparsity
from sparseq.stages.sparsity import masked_weights
from sparseq.types import Batch

# ---------------------------------------------------------------- helpers

OBS, ACT = 3, 2  # the hand-built critics
HALF_CHEETAH = (17, 6)  # observation and action sizes of the pipelines
TINY = ["--network.hidden", "16", "16", "--learner.actor-hidden", "16", "16", "--eval.every", "0"]


def random_batch(key, size: int, obs_dim: int, action_dim: int, next_shift: float = 0.0) -> Batch:
    k = jax.random.split(key, 5)
    return Batch(
        obs=jax.random.normal(k[0], (size, obs_dim)),
        action=jax.random.uniform(k[1], (size, action_dim), minval=-1.0, maxval=1.0),
        reward=jax.random.normal(k[2], (size,)),
        discount=jnp.where(jax.random.uniform(k[3], (size,)) < 0.2, 0.0, 0.99),
        next_obs=jax.random.normal(k[4], (size, obs_dim)) + next_shift,
    )


def adam_moments(opt_state):
    """(mu, nu) of the (only) Adam state inside an optax state."""
    (adam,) = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)
    ]
    return adam.mu, adam.nu


def init(learner, seed: int):
    """learner.init compiled as one program (eagerly, every op of a new shape compiles alone)."""
    return eqx.filter_jit(learner.init)(jax.random.key(seed))


def small_pipeline(name: str, *flags: str):
    config = load_pipeline(name, [*TINY, *flags])[0]
    return config, build_pipeline(config)


# ---------------------------------------------------------------- the losses by hand


def test_soft_td_targets_by_hand():
    # B = 2, H' = 1: y = r + d * (min_i Q'_i - alpha log pi).
    reward = jnp.array([1.0, -1.0])
    discount = jnp.array([0.5, 0.0])
    next_values = jnp.array([[[2.0], [3.0]], [[-4.0], [5.0]]])  # (B, 2, 1)
    next_log_prob = jnp.array([0.2, -0.4])
    # Sample 0: 1 + 0.5 * (2 - 0.5 * 0.2) = 1.95;  sample 1: terminal, -1.
    y = soft_td_targets(reward, discount, next_values, next_log_prob, jnp.float32(0.5))
    np.testing.assert_allclose(y, [[1.95], [-1.0]], rtol=1e-6)
    # H' = 2, B = 3: the min over twins is taken per head.
    next_values = jnp.array(
        [
            [[1.0, 4.0], [2.0, 3.0]],  # mins (1, 3)
            [[0.0, -1.0], [-2.0, 1.0]],  # mins (-2, -1)
            [[5.0, 5.0], [5.0, 6.0]],  # mins (5, 5)
        ]
    )
    y = soft_td_targets(
        jnp.array([0.0, 1.0, 2.0]),
        jnp.array([1.0, 0.5, 0.9]),
        next_values,
        jnp.array([1.0, 2.0, 0.0]),
        jnp.float32(0.1),
    )
    expected = [[1.0 - 0.1, 3.0 - 0.1], [1.0 + 0.5 * (-2.0 - 0.2), 1.0 + 0.5 * (-1.0 - 0.2)], [2.0 + 4.5, 2.0 + 4.5]]
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    # No gradient flows into the targets.
    grad = jax.grad(lambda v: jnp.sum(soft_td_targets(reward, discount, v, next_log_prob, 0.5)))(jnp.ones((2, 2, 1)))
    assert np.all(np.asarray(grad) == 0.0)


def test_critic_losses_by_hand():
    # B = 2, H' = 1: twin 0 ((1 - 1.5)^2 + (0 - 1)^2) / 2 = 0.625, twin 1 ((2 - 1.5)^2 + (3 - 1)^2) / 2 = 2.125.
    values = jnp.array([[[1.0], [2.0]], [[0.0], [3.0]]])
    targets = jnp.array([[1.5], [1.0]])
    np.testing.assert_allclose(critic_losses(values, targets), [2.75], rtol=1e-6)
    # B = 3, H' = 2: per head, the batch mean of the squared errors summed over twins.
    values = np.array(
        [
            [[1.0, 0.0], [2.0, 1.0]],
            [[-1.0, 2.0], [0.0, 0.0]],
            [[3.0, 1.0], [1.0, -2.0]],
        ]
    )
    targets = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    # head 0: twin 0 errors (1, -2, 1) -> 6/3 = 2;   twin 1 errors (2, -1, -1) -> 6/3 = 2  => 4
    # head 1: twin 0 errors (-1, 2, -1) -> 6/3 = 2;  twin 1 errors (0, 0, -4) -> 16/3     => 22/3
    np.testing.assert_allclose(critic_losses(jnp.asarray(values), jnp.asarray(targets)), [4.0, 22.0 / 3.0], rtol=1e-6)


def test_actor_loss_by_hand_and_its_gradients():
    q = jnp.array([1.0, -2.0, 0.5])
    log_prob = jnp.array([-1.0, 0.5, 2.0])
    alpha = jnp.float32(0.2)
    # mean(0.2 * (-1, 0.5, 2) - (1, -2, 0.5)) = mean(-1.2, 2.1, -0.1) = 0.8 / 3
    np.testing.assert_allclose(actor_loss(q, log_prob, alpha), 0.8 / 3.0, rtol=1e-6)
    d_q, d_log_prob, d_alpha = jax.grad(actor_loss, argnums=(0, 1, 2))(q, log_prob, alpha)
    np.testing.assert_allclose(d_q, [-1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(d_log_prob, [0.2 / 3] * 3, rtol=1e-6)
    assert float(d_alpha) == 0.0  # the temperature is not trained through the actor loss


def test_temperature_loss_by_hand_and_its_gradients():
    log_alpha = jnp.float32(math.log(0.5))
    log_prob = jnp.array([-1.0, 3.0])
    # A = 2: target entropy -2; -mean(log 0.5 * (-3, 1)) = -log(0.5) * (-1) = log(0.5)
    np.testing.assert_allclose(temperature_loss(log_alpha, log_prob, -2.0), math.log(0.5), rtol=1e-6)
    d_log_alpha, d_log_prob = jax.grad(temperature_loss, argnums=(0, 1))(log_alpha, log_prob, -2.0)
    np.testing.assert_allclose(d_log_alpha, 1.0, rtol=1e-6)  # -mean(-3, 1) = 1: alpha goes down
    assert np.all(np.asarray(d_log_prob) == 0.0)
    # Entropy -mean(log pi) = -3.5 below the target -2 raises alpha: gradient -mean(1, 2) < 0.
    np.testing.assert_allclose(jax.grad(temperature_loss)(log_alpha, jnp.array([3.0, 4.0]), -2.0), -1.5, rtol=1e-6)


def test_to_bounds_maps_the_open_interval_to_the_box():
    low, high = jnp.array([-2.0, 0.0]), jnp.array([2.0, 1.0])
    out = to_bounds(jnp.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 0.5]]), low, high)
    np.testing.assert_allclose(out, [[-2.0, 0.0], [0.0, 0.5], [2.0, 0.75]], rtol=1e-6)


# ---------------------------------------------------------------- the squashed Gaussian


def reference_log_density(a: np.ndarray, mean: np.ndarray, std: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """log p(a) per dimension from the CDF of a = tanh(u), differentiated numerically:
    F(a) = Phi((atanh(a) - mean) / std), float64."""

    def cdf(x):
        return norm.cdf((np.arctanh(x) - mean) / std)

    return np.log((cdf(a + h) - cdf(a - h)) / (2 * h))


def test_tanh_gaussian_log_prob_matches_the_numerical_density():
    rng = np.random.default_rng(0)
    mean = np.array([[0.3, -0.5], [1.0, 0.0], [-0.2, 0.4]])
    log_std = np.array([[-0.2, 0.1], [-1.0, 0.5], [0.0, -0.5]])
    std = np.exp(log_std)
    u = mean + std * rng.standard_normal(mean.shape)  # (B = 3, A = 2)
    a = np.tanh(u)
    # Numerical density of a (CDF differences), summed over independent dimensions.
    expected = reference_log_density(a, mean, std).sum(axis=-1)
    got = tanh_gaussian_log_prob(
        jnp.asarray(u, jnp.float32), jnp.asarray(mean, jnp.float32), jnp.asarray(log_std, jnp.float32)
    )
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # The same from the density of u minus log |d tanh / du| by central differences.
    h = 1e-5
    dtanh = (np.tanh(u + h) - np.tanh(u - h)) / (2 * h)
    second = (norm.logpdf(u, mean, std) - np.log(dtanh)).sum(axis=-1)
    np.testing.assert_allclose(got, second, rtol=1e-4, atol=1e-4)
    # The log-det is stable where tanh saturates: log(1 - tanh(u)^2) -> log 4 - 2|u|.
    far = tanh_log_det(jnp.array([-30.0, 30.0]))
    np.testing.assert_allclose(far, [math.log(4) - 60.0] * 2, rtol=1e-5)


@pytest.mark.parametrize(("mean", "log_std"), [(0.3, -0.2), (-1.0, 0.5), (0.5, 1.0)])
def test_tanh_gaussian_density_integrates_to_one_over_the_open_interval(mean, log_std):
    log_prob = jax.jit(lambda u: tanh_gaussian_log_prob(u, jnp.full((1, 1), mean), jnp.full((1, 1), log_std)))

    def density(a: float) -> float:
        return float(np.exp(log_prob(jnp.full((1, 1), np.arctanh(a), jnp.float32))[0]))

    total, _ = integrate.quad(density, -1.0, 1.0, limit=200, epsabs=1e-5, epsrel=1e-5, points=[float(np.tanh(mean))])
    assert total == pytest.approx(1.0, abs=2e-3)


def test_sample_is_the_reparameterised_tanh_of_a_gaussian_with_its_log_prob():
    key = jax.random.key(4)
    mean = jnp.array([[0.1, -0.3], [2.0, 0.0]])
    log_std = jnp.array([[-1.0, 0.0], [0.5, -0.5]])
    action, log_prob = sample_tanh_gaussian(key, mean, log_std)
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    np.testing.assert_allclose(action, np.tanh(u), rtol=1e-6)
    np.testing.assert_allclose(log_prob, tanh_gaussian_log_prob(u, mean, log_std), rtol=1e-6)
    assert np.all(np.abs(np.asarray(action)) < 1)
    # Many samples: the empirical mean of tanh(u) matches quadrature of E[tanh(u)].
    big_mean, big_log_std = jnp.full((20_000, 1), 0.4), jnp.full((20_000, 1), -0.3)
    samples, _ = sample_tanh_gaussian(jax.random.key(5), big_mean, big_log_std)
    expected, _ = integrate.quad(lambda x: np.tanh(x) * norm.pdf(x, 0.4, np.exp(-0.3)), -10, 10)
    assert float(jnp.mean(samples)) == pytest.approx(expected, abs=0.01)


# ---------------------------------------------------------------- the BatchNorm critic


def _bn(x, mean, var, module: BatchNorm):
    return (x - mean) / np.sqrt(var + module.eps) * np.asarray(module.scale) + np.asarray(module.offset)


def numpy_critic(net: CriticNetwork, x: np.ndarray, stats) -> np.ndarray:
    """The critic's forward pass in numpy; `stats(i, h)` gives (mean, var) for BatchNorm i."""
    h = _bn(x, *stats(0, x), net.batch_norms[0])
    for i, layer in enumerate(net.layers):
        h = np.maximum(h @ np.asarray(layer.weight).T + np.asarray(layer.bias), 0.0)
        h = _bn(h, *stats(i + 1, h), net.batch_norms[i + 1])
    return h @ np.asarray(net.head.linear.weight).T + np.asarray(net.head.linear.bias)


def joint_batch_with_shifted_halves():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(6, OBS)) + 3.0
    s_next = rng.normal(size=(6, OBS)) * 2.0 - 3.0
    a = rng.uniform(-1, 1, size=(6, ACT)) + 0.5
    a_next = rng.uniform(-1, 1, size=(6, ACT)) - 0.5
    return np.concatenate([s, s_next]), np.concatenate([a, a_next])


def test_batch_norm_critic_normalises_with_the_joint_batch_and_moves_running_statistics():
    net = CriticNetwork(OBS + ACT, (8,), 1, batch_norm=True, batch_norm_momentum=0.9, key=jax.random.key(0))
    obs, action = joint_batch_with_shifted_halves()
    x = np.concatenate([obs, action], axis=1)
    values, updated = net.batched(jnp.asarray(obs, jnp.float32), jnp.asarray(action, jnp.float32), train=True)

    def joint(i, h):
        return h.mean(axis=0), h.var(axis=0)

    def per_half(i, h):
        half = len(h) // 2
        means = np.concatenate(
            [np.repeat(h[:half].mean(0, keepdims=True), half, 0), np.repeat(h[half:].mean(0, keepdims=True), half, 0)]
        )
        variances = np.concatenate(
            [np.repeat(h[:half].var(0, keepdims=True), half, 0), np.repeat(h[half:].var(0, keepdims=True), half, 0)]
        )
        return means, variances

    np.testing.assert_allclose(values, numpy_critic(net, x, joint), rtol=1e-4, atol=1e-4)
    assert not np.allclose(values, numpy_critic(net, x, per_half), atol=1e-2)
    # The input BatchNorm's running statistics moved by the momentum towards the JOINT batch's.
    bn0 = updated.batch_norms[0]
    np.testing.assert_allclose(bn0.running_mean, 0.1 * x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn0.running_var, 0.9 + 0.1 * x.var(0), rtol=1e-5)
    # Every later BatchNorm moved too; the trainable parameters did not change.
    assert not np.allclose(updated.batch_norms[1].running_mean, 0.0)
    np.testing.assert_array_equal(updated.layers[0].weight, net.layers[0].weight)
    np.testing.assert_array_equal(net.batch_norms[0].running_mean, np.zeros(OBS + ACT))  # the input is untouched


def test_batch_norm_critic_in_eval_mode_uses_running_statistics():
    net = CriticNetwork(OBS + ACT, (8,), 2, batch_norm=True, batch_norm_momentum=0.9, key=jax.random.key(2))
    obs, action = joint_batch_with_shifted_halves()
    obs, action = jnp.asarray(obs, jnp.float32), jnp.asarray(action, jnp.float32)
    _, net = net.batched(obs, action, train=True)  # non-trivial running statistics
    net = eqx.tree_at(lambda n: n.batch_norms[0].scale, net, jnp.linspace(0.5, 1.5, OBS + ACT))
    values, same = net.batched(obs, action, train=False)
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(net)):
        np.testing.assert_array_equal(a, b)  # nothing moves in eval mode
    x = np.concatenate([np.asarray(obs), np.asarray(action)], axis=1)

    def running(i, h):
        return np.asarray(net.batch_norms[i].running_mean), np.asarray(net.batch_norms[i].running_var)

    np.testing.assert_allclose(values, numpy_critic(net, x, running), rtol=1e-4, atol=1e-4)
    # Independent of the batch's composition: each half alone, or one sample alone.
    first, _ = net.batched(obs[:6], action[:6], train=False)
    one, _ = net.batched(obs[7:8], action[7:8], train=False)
    np.testing.assert_allclose(first, values[:6], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one, values[7:8], rtol=1e-5, atol=1e-6)
    # In train mode the same samples get other values alone than in the joint batch.
    train_first, _ = net.batched(obs[:6], action[:6], train=True)
    train_joint, _ = net.batched(obs, action, train=True)
    assert not np.allclose(train_first, train_joint[:6], atol=1e-3)


class BatchNormLearner(NamedTuple):
    config: Any
    pipeline: Any
    update: Any  # the learner's update, jitted once for the tests that share it


@pytest.fixture(scope="module")
def issac() -> BatchNormLearner:
    """pipelines/issac-halfcheetah at small sizes: a BatchNorm critic with K + 1 = 2 heads,
    no target critic (its update is the slowest thing here to compile: built once)."""
    config, pipeline = small_pipeline("issac-halfcheetah")
    return BatchNormLearner(config, pipeline, eqx.filter_jit(pipeline.learner.update))


def test_sac_update_with_batch_norm_moves_running_statistics_from_the_joint_batch(issac):
    learner = issac.pipeline.learner
    momentum = issac.config.network.batch_norm_momentum
    assert issac.config.network.batch_norm and learner.target == "online" and momentum == 0.99
    state = init(learner, 0)
    assert state.critic.target is None
    batch = random_batch(jax.random.key(1), 16, *HALF_CHEETAH, next_shift=4.0)  # s' far from s
    new_state, metrics = issac.update(state, batch)
    assert np.isfinite(float(metrics["loss"][0]))
    bn0 = new_state.critic.online.twins.batch_norms[0]  # leaves (P = 1, 2 twins, F)
    obs_dim = HALF_CHEETAH[0]
    joint_obs_mean = np.concatenate([np.asarray(batch.obs), np.asarray(batch.next_obs)]).mean(0)
    obs_only_mean = np.asarray(batch.obs).mean(0)
    for twin in range(2):
        got = np.asarray(bn0.running_mean[0, twin, :obs_dim])
        np.testing.assert_allclose(got, (1 - momentum) * joint_obs_mean, rtol=1e-4, atol=1e-7)
        assert not np.allclose(got, (1 - momentum) * obs_only_mean, atol=1e-3)
    # Every BatchNorm's running statistics moved, by the momentum only (no gradient).
    for before, after in zip(state.critic.online.twins.batch_norms, new_state.critic.online.twins.batch_norms):
        assert not np.allclose(after.running_mean, before.running_mean)
        assert not np.allclose(after.running_var, before.running_var)
        assert np.all(np.asarray(after.running_var) > (momentum - 1e-6) * np.asarray(before.running_var))
    # A second update moves them again, from where the first left them.
    newer, _ = issac.update(new_state, random_batch(jax.random.key(2), 16, *HALF_CHEETAH))
    moved = newer.critic.online.twins.batch_norms[0].running_mean - bn0.running_mean
    assert np.all(np.abs(np.asarray(moved)) > 0)


def test_acting_does_not_depend_on_the_critic(issac):
    learner = issac.pipeline.learner
    state = init(learner, 3)
    obs = jax.random.normal(jax.random.key(4), (5, HALF_CHEETAH[0]))
    broken = eqx.tree_at(
        lambda s: s.critic.online,
        state,
        jax.tree.map(lambda x: jnp.full_like(x, jnp.nan) if eqx.is_inexact_array(x) else x, state.critic.online),
    )
    key = jax.random.key(5)
    act = jax.jit(learner.act)
    deterministic = jax.jit(learner.act_deterministic)
    acted = act(state, obs, key, jnp.float32(0.0))
    np.testing.assert_array_equal(act(broken, obs, key, jnp.float32(0.0)), acted)
    np.testing.assert_array_equal(deterministic(broken, obs), deterministic(state, obs))
    low, high = np.array(learner.action_low), np.array(learner.action_high)
    assert np.all(np.isfinite(np.asarray(acted))) and np.all((low <= acted) & (acted <= high))
    # Deterministic acting is the squashed mean, scaled to the bounds.
    mean, _ = select_member(state.actor.online, 0).batched(obs)
    expected = low + 0.5 * (np.tanh(mean) + 1) * (high - low)
    np.testing.assert_allclose(deterministic(state, obs), expected, rtol=1e-5, atol=1e-6)
    # The policy does depend on the actor, and epsilon = 1 acts uniformly at random.
    other = eqx.tree_at(lambda s: s.actor.online.out.bias, state, state.actor.online.out.bias + 1.0)
    assert not np.allclose(deterministic(other, obs), deterministic(state, obs))
    assert not np.allclose(act(state, obs, key, jnp.float32(1.0)), acted)
    # And an update (which changes the critic and, every policy_delay steps, the actor)
    # leaves acting a function of the actor alone.
    trained, _ = issac.update(state, random_batch(jax.random.key(6), 16, *HALF_CHEETAH))
    mixed = eqx.tree_at(lambda s: s.critic, trained, state.critic)
    np.testing.assert_array_equal(act(mixed, obs, key, jnp.float32(0.0)), act(trained, obs, key, jnp.float32(0.0)))


# ---------------------------------------------------------------- iS-SAC's head shift


def test_issac_shift_moves_head_one_into_head_zero_which_never_trains(issac):
    config, pipeline, update = issac
    learner = pipeline.learner
    (shift,) = [op for op in pipeline.operators if isinstance(op, SharedTargetShift)]
    assert shift.period == 200 and config.network.iterations == 1
    state = init(learner, 0)
    op_state = shift.init(state)
    head = state.critic.online.twins.head.linear
    assert head.weight.shape[:3] == (1, 2, 2)  # (P, twins, K + 1 heads * 1 output, F)

    # Before any gradient step the shift does not fire.
    _, unshifted, metrics = shift(op_state, state, jnp.int32(199), jnp.int32(200))
    assert not bool(metrics["heads_shifted"])
    np.testing.assert_array_equal(unshifted.critic.online.twins.head.linear.weight, head.weight)

    trained = state
    for i in range(4):
        trained, _ = update(trained, random_batch(jax.random.key(10 + i), 16, *HALF_CHEETAH))
    after = trained.critic.online.twins.head.linear
    # Head 0 of both twins: bitwise unchanged, zero Adam moments; head 1 moved.
    np.testing.assert_array_equal(after.weight[:, :, 0], head.weight[:, :, 0])
    np.testing.assert_array_equal(after.bias[:, :, 0], head.bias[:, :, 0])
    assert np.all(np.any(np.asarray(after.weight[:, :, 1] != head.weight[:, :, 1]), axis=-1))
    for moment in adam_moments(trained.critic.opt_state):
        assert np.all(np.asarray(moment.twins.head.linear.weight[:, :, 0]) == 0.0)
        assert np.all(np.asarray(moment.twins.head.linear.bias[:, :, 0]) == 0.0)
        assert np.any(np.asarray(moment.twins.head.linear.weight[:, :, 1]) != 0.0)

    # Not on a period crossing: nothing happens.
    _, same, metrics = jax.jit(shift)(op_state, trained, jnp.int32(200), jnp.int32(201))
    assert not bool(metrics["heads_shifted"])
    np.testing.assert_array_equal(same.critic.online.twins.head.linear.weight, after.weight)
    # On the crossing: head 0 <- head 1 in each twin, head 1 unchanged, the rest untouched.
    _, shifted, metrics = jax.jit(shift)(op_state, trained, jnp.int32(399), jnp.int32(400))
    assert bool(metrics["heads_shifted"])
    new = shifted.critic.online.twins.head.linear
    for twin in range(2):
        np.testing.assert_array_equal(new.weight[:, twin, 0], after.weight[:, twin, 1])
        np.testing.assert_array_equal(new.bias[:, twin, 0], after.bias[:, twin, 1])
        np.testing.assert_array_equal(new.weight[:, twin, 1], after.weight[:, twin, 1])
        np.testing.assert_array_equal(new.bias[:, twin, 1], after.bias[:, twin, 1])
    assert not np.array_equal(after.weight[:, 0, 0], after.weight[:, 0, 1])  # the shift changed something
    np.testing.assert_array_equal(
        shifted.critic.online.twins.layers[0].weight, trained.critic.online.twins.layers[0].weight
    )
    np.testing.assert_array_equal(shifted.actor.online.out.weight, trained.actor.online.out.weight)
    # And head 0 stays put under further updates after the shift.
    again, _ = update(shifted, random_batch(jax.random.key(20), 16, *HALF_CHEETAH))
    np.testing.assert_array_equal(again.critic.online.twins.head.linear.weight[:, :, 0], new.weight[:, :, 0])


# ---------------------------------------------------------------- masks stay exactly zero


def make_iteration(learner, operators, obs_dim: int, action_dim: int):
    """One jitted learner update on a random batch, then every operator in order;
    `forced` (P,) replaces the critics' loss sums before the operators when `force`."""

    @eqx.filter_jit
    def iteration(state, op_states, key, before, after, force, forced):
        state, _ = learner.update(state, random_batch(key, 16, obs_dim, action_dim))
        sums = jnp.where(force, forced, state.critic.loss_sums)
        state = eqx.tree_at(lambda s: s.critic.loss_sums, state, sums)
        new_states = []
        for op, op_state in zip(operators, op_states):
            op_state, state, _ = op(op_state, state, before, after)
            new_states.append(op_state)
        return state, tuple(new_states)

    return iteration


def assert_masked_exactly_zero(values, name: str) -> None:
    masks = jax.tree.leaves(values.masks)
    assert masks, name
    for tree, what in [(values.online, "weights"), *[(m, "Adam moment") for m in adam_moments(values.opt_state)]]:
        for w, m in zip(masked_weights(tree, values.masks), masks):
            pruned = np.asarray(w)[~np.asarray(m)]
            assert np.all(pruned == 0.0), f"{name}: a pruned {what} is {pruned[pruned != 0][:3]}"


def overall(masks, member: int) -> float:
    """Fraction of pruned weights of one member (numpy: no eager JAX op per call)."""
    leaves = [np.asarray(m)[member] for m in jax.tree.leaves(masks)]
    return sum(int(np.sum(~m)) for m in leaves) / sum(m.size for m in leaves)


def test_eaudesac_masks_stay_zero_and_the_actor_follows_the_selected_critic():
    period, rho = 5, 0.2
    flags = ["--operators.prune_select.period", str(period), "--operators.match_sparsity.period", str(period)]
    flags += ["--operators.prune_select.max_prune_fraction", str(rho)]
    _, pipeline = small_pipeline("eaudesac-halfcheetah", "--run.total-steps", "10000", *flags)
    kinds = [type(op) for op in pipeline.operators]
    assert kinds[1:] == [PruneSelect, MatchSparsity] and pipeline.learner.population == 3
    learner = pipeline.learner
    state = init(learner, 0)
    op_states = eqx.filter_jit(lambda s: tuple(op.init(s) for op in pipeline.operators))(state)
    iteration = make_iteration(learner, pipeline.operators, *HALF_CHEETAH)
    actor_size = sum(m.size for m in jax.tree.leaves(state.actor.masks))
    history = []
    for i in range(40):
        # Every other selection the sparsest critic is made to win (its loss sum forced lowest).
        force = (i + 1) % (2 * period) == 0
        state, op_states = iteration(
            state,
            op_states,
            jax.random.key(100 + i),
            jnp.int32(i),
            jnp.int32(i + 1),
            jnp.bool_(force),
            jnp.array([1.0, 1.0, 0.0]),
        )
        assert_masked_exactly_zero(state.critic, f"critics after iteration {i}")
        assert_masked_exactly_zero(state.actor, f"actor after iteration {i}")
        critic_sparsity = overall(state.critic.masks, int(state.critic.acting_member))
        actor_sparsity = overall(state.actor.masks, 0)
        if (i + 1) % period == 0:
            # match_sparsity ran right after the selection: the actor is as sparse as
            # the selected critic (up to the rounding of one weight).
            assert abs(actor_sparsity - critic_sparsity) <= 1.0 / actor_size, (i, actor_sparsity, critic_sparsity)
        history.append((critic_sparsity, actor_sparsity))
    critic_series, actor_series = np.array(history).T
    assert np.all(np.diff(critic_series) >= 0) and np.all(np.diff(actor_series) >= 0), history
    # Four forced selections of the sparsest critic: at least 1 - (1 - rho)^4 of the weights pruned.
    assert critic_series[-1] >= 1 - (1 - rho) ** 4 - 0.01
    assert actor_series[-1] == pytest.approx(critic_series[-1], abs=1.0 / actor_size)
    # The members are pruned copies of the winner: increasing sparsity along the population.
    member_sparsity = [overall(state.critic.masks, k) for k in range(3)]
    assert member_sparsity[0] < member_sparsity[1] < member_sparsity[2]


def test_polyprunesac_masks_stay_zero_and_reach_the_final_sparsity():
    total, every = 60, 4  # the schedule runs from step 12 to step 48
    flags = ["--run.total-steps", str(total), "--operators.0.every", str(every), "--operators.1.every", str(every)]
    _, pipeline = small_pipeline("polyprunesac-halfcheetah", *flags)
    prune_ops = [op for op in pipeline.operators if isinstance(op, PolyPrune)]
    assert [op.on for op in prune_ops] == ["critic", "actor"] and all(op.every == every for op in prune_ops)
    learner = pipeline.learner
    state = init(learner, 1)
    op_states = eqx.filter_jit(lambda s: tuple(op.init(s) for op in pipeline.operators))(state)
    iteration = make_iteration(learner, pipeline.operators, *HALF_CHEETAH)
    history = []
    for i in range(total):
        state, op_states = iteration(
            state, op_states, jax.random.key(200 + i), jnp.int32(i), jnp.int32(i + 1), jnp.bool_(False), jnp.zeros((1,))
        )
        assert_masked_exactly_zero(state.critic, f"critic after iteration {i}")
        assert_masked_exactly_zero(state.actor, f"actor after iteration {i}")
        history.append((overall(state.critic.masks, 0), overall(state.actor.masks, 0)))
    critic_series, actor_series = np.array(history).T
    assert np.all(np.diff(critic_series) >= 0) and np.all(np.diff(actor_series) >= 0)
    assert critic_series[10] == 0.0 and actor_series[10] == 0.0  # before the start
    assert 0 < critic_series[30] < 0.95 and 0 < actor_series[30] < 0.95
    # Every layer of both networks ends at round(0.95 * size) pruned weights; each of the
    # twin critics' stacked layers (2, out, in) is ranked on its own.
    layers = [np.asarray(m)[0] for m in jax.tree.leaves(state.actor.masks)]
    layers += [twin for m in jax.tree.leaves(state.critic.masks) for twin in np.asarray(m)[0]]
    for m in layers:
        assert m.ndim == 2 and int(np.sum(~m)) == math.floor(0.95 * m.size + 0.5), m.shape


# ---------------------------------------------------------------- one-line errors


BAD_CONTINUOUS = [
    (
        ["train", "dqn-cartpole", "--eval.every", "1000", "--eval.video", "true"],
        "eval.video = True: renders MuJoCo and DeepMind Control tasks only; 'CartPole-v1' is not one",
    ),
    (
        ["train", "dqn-cartpole", "--env.task-id", "HalfCheetah-v5"],
        "the Q-learner needs discrete actions; HalfCheetah-v5 has continuous actions",
    ),
    (
        ["train", "sac-halfcheetah", "--env.task-id", "CartPole-v1"],
        "the sac learner needs continuous actions; CartPole-v1 has 2 discrete actions",
    ),
    (
        ["train", "sac-halfcheetah", "--env.task-id", "HalfCheetha-v5"],
        "env.task_id = 'HalfCheetha-v5': unknown envpool task id; did you mean 'HalfCheetah-v5'?",
    ),
    (
        ["train", "sac-halfcheetah", "--network.batch-norm", "true"],
        "a BatchNorm critic (network.batch_norm, CrossQ) has no target critic",
    ),
]

TWO_POLY_PRUNE = """extends = "polyprunesac-halfcheetah"

[[operators]]
kind = "poly_prune"
on = "critic"

[[operators]]
kind = "poly_prune"
on = "{second}"
final_sparsity = 0.5

[[operators]]
kind = "polyak"
on = "critic"
"""


def check_one_line_error(returncode: int, out: str, err: str, expected: str) -> None:
    assert returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparseq: error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(("args", "expected"), BAD_CONTINUOUS, ids=[" ".join(a[1:]) for a, _ in BAD_CONTINUOUS])
def test_action_space_mismatches_are_one_line_errors(tmp_path, monkeypatch, capsys, args, expected):
    from sparseq.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
    returncode = main(list(args))
    out, err = capsys.readouterr()
    check_one_line_error(returncode, out, err, expected)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "checkpoints").exists()


def test_discrete_learner_on_a_continuous_task_exits_2_as_a_process(run_cli):
    args, expected = BAD_CONTINUOUS[0]
    result = run_cli(*args)
    check_one_line_error(result.returncode, result.stdout, result.stderr, expected)


def test_two_poly_prune_on_one_value_state_are_refused_but_critic_and_actor_build(tmp_path, monkeypatch, capsys):
    from sparseq.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
    (tmp_path / "twice.toml").write_text(TWO_POLY_PRUNE.format(second="critic"))
    returncode = main(["train", "twice.toml"])
    out, err = capsys.readouterr()
    check_one_line_error(
        returncode, out, err, "twice.toml: operators.1.kind = 'poly_prune': a second operator for the masks: operator 0"
    )
    (tmp_path / "both.toml").write_text(TWO_POLY_PRUNE.format(second="actor"))
    config = load_pipeline(str(tmp_path / "both.toml"), TINY)[0]
    pipeline = build_pipeline(config)
    prune_ops = [op for op in pipeline.operators if isinstance(op, PolyPrune)]
    assert [(op.on, op.final_sparsity) for op in prune_ops] == [("critic", 0.95), ("actor", 0.5)]
