"""Sparse iS-QL: EauDeQN's pruning selection over iS networks with one shared bootstrap
(member 0's head 0), so the selection compares losses measured against the same targets."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparseq.pipeline.config import ConfigError, load_pipeline
from sparseq.pipeline.config.build import build_pipeline
from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.q_learner import LearnerState, QLearner
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.stages.operators import PruneSelect, SharedTargetShift
from sparseq.types import Batch

OPTIMIZER = optax.adam(1e-3)


def learner(target: str, population: int, heads: int, actions: int = 1, features: int = 1, hidden=()) -> QLearner:
    def make(key):
        k1, k2 = jax.random.split(key)
        return QNetwork(MLPTorso(features, hidden, key=k1), heads, actions, "lecun_normal", key=k2)

    return QLearner(
        make_network=make, optimizer=OPTIMIZER, num_actions=actions, population=population, masked=True, target=target
    )


def with_heads(state: LearnerState, weight) -> LearnerState:
    """Sets the stacked last-layer kernel (P, H*A, F) and zero biases."""
    weight = jnp.asarray(weight, jnp.float32)
    bias = jnp.zeros(weight.shape[:2], jnp.float32)
    return eqx.tree_at(lambda s: (s.online.head.linear.weight, s.online.head.linear.bias), state, (weight, bias))


def selection(**kwargs) -> PruneSelect:
    return PruneSelect(
        **{"period": 1, "num_networks": 2, "optimizer": OPTIMIZER, "member_target": True, "max_prune_fraction": 0.5}
        | kwargs
    )


def test_selection_compares_losses_against_the_same_targets():
    # F = 1 with no hidden layer, A = 1, two heads: Q_h(s) = w_h * s. One sample,
    # s = s' = 1, r = 0, discount 1, so head 1's target is head 0's value at s'.
    #   member 0 (selected): w = (1, 0): head 1 against member 0's head 0: (0 - 1)^2 = 1
    #   member 1:            w = (3, 3): against its own head 0: (3 - 3)^2 = 0 (lower),
    #                                    against member 0's head 0: (3 - 1)^2 = 4 (higher)
    # The shared-target selection must keep member 0; comparing own-head losses would pick 1.
    weights = [[[1.0], [0.0]], [[3.0], [3.0]]]
    batch = Batch(
        obs=jnp.ones((1, 1)), action=jnp.zeros((1,), jnp.int32), reward=jnp.zeros((1,)),
        discount=jnp.ones((1,)), next_obs=jnp.ones((1, 1)),
    )  # fmt: skip
    shared = learner("selected_head", population=2, heads=2)
    state = with_heads(shared.init(jax.random.key(0)), weights)
    updated, metrics = jax.jit(shared.update)(state, batch)
    np.testing.assert_allclose(updated.loss_sums, [1.0, 4.0])
    np.testing.assert_allclose(metrics["head_losses"][:, 0], [1.0, 4.0])

    op = selection()
    op_state = op.init(updated)
    op_state, selected, _ = jax.jit(op.__call__)(op_state, updated, jnp.asarray(0), jnp.asarray(1))
    assert int(op_state.selected) == 0
    np.testing.assert_allclose(op_state.loss_sums, [1.0, 4.0])
    assert selected.target is None and int(selected.acting_member) == 0

    # The naive pairing (each member against its own head 0) ranks them the other way...
    own = learner("online", population=2, heads=2)
    own_updated, _ = jax.jit(own.update)(with_heads(own.init(jax.random.key(0)), weights), batch)
    np.testing.assert_allclose(own_updated.loss_sums, [1.0, 0.0])
    # ...and the selection refuses it.
    with pytest.raises(ValueError, match="selected_head"):
        selection(member_target=False).init(own_updated)


def test_winner_head_one_becomes_the_shared_target_and_masks_stay_zero():
    """The selection then the window shift, as the pipelines list them, over 60 updates
    of 3 members with 3 heads: pruned weights stay exactly zero, masks shift with the
    heads, and after each selection every member's head 0 is the winner's trained head 1
    (member 0: weights and mask; the others: a subset of its mask), so member 0's head 0
    is the new shared target."""
    actions, features = 2, 4
    lrn = learner("selected_head", population=3, heads=3, actions=actions, features=features, hidden=(16,))
    select = selection(period=10, num_networks=3, criterion="global")
    shift = SharedTargetShift(period=10)
    state = lrn.init(jax.random.key(0))
    ops = (select.init(state), shift.init(state))

    @jax.jit
    def step(state, ops, key, i):
        k = jax.random.split(key, 4)
        batch = Batch(
            obs=jax.random.normal(k[0], (32, features)), action=jax.random.randint(k[1], (32,), 0, actions),
            reward=jax.random.normal(k[2], (32,)), discount=jnp.full((32,), 0.9),
            next_obs=jax.random.normal(k[3], (32, features)),
        )  # fmt: skip
        state, _ = lrn.update(state, batch)
        before = state
        select_state, state, _ = select(ops[0], state, i, i + 1)
        shift_state, state, _ = shift(ops[1], state, i, i + 1)
        return state, (select_state, shift_state), before

    rows = slice(actions, 2 * actions)  # head 1's rows of the last kernel
    selections = 0
    for i in range(60):
        state, ops, before = step(state, ops, jax.random.key(i + 1), jnp.asarray(i))
        for weight, mask in zip(jax.tree.leaves(state.online), jax.tree.leaves(state.masks)):
            if weight.shape == mask.shape:
                assert not np.any(np.asarray(weight)[~np.asarray(mask)])
        if (i + 1) % 10 == 0:
            selections += 1
            winner = int(ops[0].selected)
            head_weight = np.asarray(before.online.head.linear.weight[winner, rows])
            head_mask = np.asarray(before.masks.head.linear.weight[winner, rows])
            # Member 0 keeps the winner's mask; the others prune a subset of it further.
            np.testing.assert_array_equal(np.asarray(state.masks.head.linear.weight[0, :actions]), head_mask)
            for k in (1, 2):
                assert not np.any(np.asarray(state.masks.head.linear.weight[k, :actions]) & ~head_mask)
            np.testing.assert_array_equal(np.asarray(state.online.head.linear.weight[0, :actions]), head_weight)
            assert int(state.acting_member) == 0
    assert selections == 6 and float(ops[0].member_sparsity[-1]) > float(ops[0].member_sparsity[0])


def _stored_parameters(pipeline) -> int:
    """Online and target parameters the learner state holds (shapes only)."""
    state = jax.eval_shape(pipeline.learner.init, jax.random.key(0))
    stored = [state.online, state.target]
    return sum(math.prod(x.shape) for x in jax.tree.leaves(stored) if isinstance(x, jax.ShapeDtypeStruct))


def test_pipelines_build_the_composition_and_store_fewer_parameters_than_eaudedqn():
    config, _, _ = load_pipeline("eaudeisdqn-cartpole")
    pipeline = build_pipeline(config)
    assert pipeline.learner.target == "selected_head" and pipeline.learner.population == 4
    assert [type(op) for op in pipeline.operators] == [PruneSelect, SharedTargetShift]
    assert pipeline.operators[0].member_target and pipeline.operators[0].period == pipeline.operators[1].period
    eaudedqn = build_pipeline(load_pipeline("eaudedqn-cartpole")[0])
    assert 0 < _stored_parameters(pipeline) < _stored_parameters(eaudedqn)
    for name in ("eaudeisdqn-lunarlander", "eaudeisdqn-atari"):
        config, _, _ = load_pipeline(name)
        assert config.learner.target == "selected_head"


@pytest.mark.parametrize(
    "pipeline, overrides, key",
    [
        ("eaudeisdqn-cartpole", ["--network.iterations", "0"], "learner"),
        ("eaudeisdqn-cartpole", ["--learner.target", "online"], "operators.prune_select.kind"),
    ],
)
def test_inconsistent_sparse_isql_settings_are_one_line_errors(pipeline, overrides, key):
    with pytest.raises(ConfigError) as error:
        build_pipeline(load_pipeline(pipeline, overrides)[0])
    message = str(error.value)
    assert key in message and "\n" not in message


def test_selected_member_zero_alone_is_plain_isql():
    """With one member, target='selected_head' is iS-QL: the same losses and update."""
    batch_key = jax.random.split(jax.random.key(3), 5)
    batch = Batch(
        obs=jax.random.normal(batch_key[0], (16, 4)), action=jax.random.randint(batch_key[1], (16,), 0, 2),
        reward=jax.random.normal(batch_key[2], (16,)), discount=jnp.full((16,), 0.99),
        next_obs=jax.random.normal(batch_key[4], (16, 4)),
    )  # fmt: skip
    results = []
    for target in ("selected_head", "online"):
        lrn = learner(target, population=1, heads=4, actions=2, features=4, hidden=(8,))
        state, metrics = jax.jit(lrn.update)(lrn.init(jax.random.key(0)), batch)
        results.append((select_member(state.online, 0), metrics["head_losses"]))
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
