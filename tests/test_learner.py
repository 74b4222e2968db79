"""Q-learner: DQN bootstraps from the separate target network, TF-DQN from the
current online parameters under stop-gradient; one SGD step checked by hand; the
target network is untouched by updates; epsilon-greedy acting."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparseq.stages.learners import QLearner
from sparseq.stages.learners.population import select_member
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.types import Batch

LR = 0.1
GAMMA = 0.9
OBS, ACTIONS, BATCH = 3, 2, 5


def make_network(key):
    torso_key, head_key = jax.random.split(key)
    return QNetwork(MLPTorso(OBS, (8,), key=torso_key), 1, ACTIONS, "lecun_normal", key=head_key)


def learner(target: str, loss: str = "l2") -> QLearner:
    return QLearner(make_network, optax.sgd(LR), num_actions=ACTIONS, target=target, loss=loss)


def make_batch(seed: int = 0) -> Batch:
    k = jax.random.split(jax.random.key(seed), 4)
    return Batch(
        obs=jax.random.normal(k[0], (BATCH, OBS)),
        action=jax.random.randint(k[1], (BATCH,), 0, ACTIONS),
        reward=jax.random.normal(k[2], (BATCH,)),
        discount=jnp.asarray([GAMMA, GAMMA, 0.0, GAMMA**2, GAMMA]),  # a terminal and an n=2 sample
        next_obs=jax.random.normal(k[3], (BATCH, OBS)),
    )


def manual_loss(online: QNetwork, bootstrap: QNetwork, batch: Batch, stop_gradient: bool = True):
    """mean_b (Q(s_b, a_b) - (r_b + d_b * max_a' Q_boot(s'_b, a')))^2, written out."""
    q = jax.vmap(online)(batch.obs)[:, 0]  # (B, A)
    chosen = q[jnp.arange(BATCH), batch.action]
    next_q = jax.vmap(bootstrap)(batch.next_obs)[:, 0]
    y = batch.reward + batch.discount * next_q.max(axis=-1)
    if stop_gradient:
        y = jax.lax.stop_gradient(y)
    return jnp.mean((chosen - y) ** 2)


def sgd_step(network: QNetwork, grads: QNetwork) -> QNetwork:
    return jax.tree.map(lambda p, g: p - LR * g, network, grads)


def assert_trees_close(a, b, **tolerance):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, **({"rtol": 1e-5, "atol": 1e-6} | tolerance))


def perturbed(network: QNetwork, seed: int) -> QNetwork:
    """A different network of the same structure (stands for an older target)."""
    leaves, treedef = jax.tree.flatten(network)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_dqn_update_regresses_on_the_target_network():
    dqn = learner("network")
    state = dqn.init(jax.random.key(0))
    online = select_member(state.online, 0)
    assert_trees_close(state.target, online)  # the target starts as a copy
    target = perturbed(online, seed=1)
    state = eqx.tree_at(lambda s: s.target, state, target)
    batch = make_batch()

    new_state, metrics = eqx.filter_jit(dqn.update)(state, batch)

    expected_loss = manual_loss(online, target, batch)
    assert float(metrics["loss"][0]) == pytest.approx(float(expected_loss), rel=1e-5)
    assert float(expected_loss) != pytest.approx(float(manual_loss(online, online, batch)), rel=1e-3)
    grads = jax.grad(manual_loss)(online, target, batch)
    assert_trees_close(select_member(new_state.online, 0), sgd_step(online, grads))
    assert_trees_close(new_state.target, target, rtol=0, atol=0)  # updates never touch the target
    assert int(new_state.updates) == 1
    assert float(new_state.loss_sums[0]) == pytest.approx(float(expected_loss), rel=1e-5)


def test_tf_dqn_update_bootstraps_from_current_parameters_under_stop_gradient():
    tfdqn = learner("online")
    state = tfdqn.init(jax.random.key(0))
    assert state.target is None  # one parameter set
    online = select_member(state.online, 0)
    batch = make_batch(seed=3)

    new_state, metrics = eqx.filter_jit(tfdqn.update)(state, batch)

    expected_loss = manual_loss(online, online, batch)
    assert float(metrics["loss"][0]) == pytest.approx(float(expected_loss), rel=1e-5)
    grads = jax.grad(manual_loss)(online, online, batch)
    assert_trees_close(select_member(new_state.online, 0), sgd_step(online, grads))
    # Without the stop-gradient the step would differ (the test can tell them apart).
    leaky = jax.grad(lambda n: manual_loss(n, n, batch, stop_gradient=False))(online)
    differences = [
        float(jnp.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(sgd_step(online, leaky)), jax.tree.leaves(new_state.online))
    ]
    assert max(differences) > 1e-4


def test_tf_dqn_second_update_uses_the_updated_parameters():
    tfdqn = learner("online")
    state = tfdqn.init(jax.random.key(0))
    update = eqx.filter_jit(tfdqn.update)
    state, _ = update(state, make_batch(seed=1))
    after_first = select_member(state.online, 0)
    batch = make_batch(seed=2)
    _, metrics = update(state, batch)
    assert float(metrics["loss"][0]) == pytest.approx(float(manual_loss(after_first, after_first, batch)), rel=1e-5)


def test_huber_loss_option():
    dqn = learner("online", loss="huber")
    state = dqn.init(jax.random.key(0))
    online = select_member(state.online, 0)
    batch = make_batch()
    batch = batch._replace(reward=batch.reward * 10)  # errors beyond delta = 1
    _, metrics = eqx.filter_jit(dqn.update)(state, batch)
    q = jax.vmap(online)(batch.obs)[:, 0]
    y = batch.reward + batch.discount * jax.vmap(online)(batch.next_obs)[:, 0].max(-1)
    error = np.abs(np.asarray(q[jnp.arange(BATCH), batch.action] - y))
    expected = np.mean(np.where(error <= 1, 0.5 * error**2, error - 0.5))
    assert float(metrics["loss"][0]) == pytest.approx(expected, rel=1e-5)


def test_epsilon_greedy_acting():
    dqn = learner("network")
    state = dqn.init(jax.random.key(0))
    obs = jax.random.normal(jax.random.key(5), (4_000, OBS))
    greedy = np.asarray(jnp.argmax(jax.vmap(select_member(state.online, 0))(obs)[:, 0], axis=-1))
    act = eqx.filter_jit(dqn.act)
    key = jax.random.key(9)
    np.testing.assert_array_equal(act(state, obs, key, jnp.asarray(0.0)), greedy)
    random_actions = np.asarray(act(state, obs, key, jnp.asarray(1.0)))
    assert random_actions.dtype == np.int32
    assert set(random_actions.tolist()) == {0, 1}
    # fully random: each action half the time, independently of the greedy choice
    assert np.mean(random_actions == greedy) == pytest.approx(0.5, abs=0.03)
    # epsilon 0.3 with 2 actions: non-greedy with probability 0.3 * 1/2
    mixed = np.asarray(act(state, obs, key, jnp.asarray(0.3)))
    assert np.mean(mixed != greedy) == pytest.approx(0.15, abs=0.02)


def test_population_members_start_equal_and_get_their_own_optimizer_state():
    population = QLearner(make_network, optax.adam(1e-3), num_actions=ACTIONS, population=3, target="network")
    state = population.init(jax.random.key(0))
    first = select_member(state.online, 0)
    for member in (1, 2):
        assert_trees_close(select_member(state.online, member), first, rtol=0, atol=0)
    new_state, metrics = eqx.filter_jit(population.update)(state, make_batch())
    assert metrics["loss"].shape == (3,)
    # same data, same start, same shared target: every member takes the same step
    assert_trees_close(select_member(new_state.online, 2), select_member(new_state.online, 0))
