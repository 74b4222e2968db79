"""PolyPruneQN: the cubic schedule's values, and the operator's recomputations (exact
per-layer counts, only on the gradient-step grid, s_final reached and then frozen)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.q_learner import QLearner
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.stages.operators import PolyPrune
from sparseq.stages.operators.poly_prune import cubic_sparsity


def make_network(key) -> QNetwork:
    k1, k2 = jax.random.split(key)
    return QNetwork(MLPTorso(4, (24, 24), layer_norm=True, key=k1), 1, 2, "lecun_normal", key=k2)


def test_schedule_at_zero_start_mid_end_and_after():
    start, end, final = 200, 800, 0.95
    steps = jnp.array([0, start, (start + end) // 2, end, 10 * end])
    values = cubic_sparsity(steps, start_step=start, end_step=end, final_sparsity=final)
    expected = [0.0, 0.0, final * (1 - 0.5**3), final, final]
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-7)
    quarter = cubic_sparsity(start + (end - start) // 4, start_step=start, end_step=end, final_sparsity=final)
    assert float(quarter) == pytest.approx(final * (1 - 0.75**3))


def test_operator_follows_the_schedule_on_the_gradient_step_grid():
    learner = QLearner(make_network=make_network, optimizer=optax.adam(1e-3), num_actions=2, masked=True)
    state = learner.init(jax.random.key(0))
    op = PolyPrune(start_step=100, end_step=300, final_sparsity=0.9, every=10)
    op_state = op.init(state)

    def step(carry, t):
        ls, st = carry
        ls = eqx.tree_at(lambda s: s.updates, ls, ls.updates + 1)  # one gradient step per env step
        st, ls, metrics = op(st, ls, t, t + 1)
        layers = [jnp.sum(~m) for m in jax.tree.leaves(select_member(ls.masks, 0))]
        return (ls, st), (metrics["pruned"], metrics["sparsity/overall"], jnp.stack(layers))

    (state, _), (pruned, overall, layer_counts) = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(400)))(
        (state, op_state)
    )
    pruned, overall, layer_counts = np.asarray(pruned), np.asarray(overall), np.asarray(layer_counts)
    when = np.nonzero(pruned)[0] + 1  # env step after each recomputation
    # Only on multiples of `every` updates, strictly inside (start, end], plus none after.
    assert np.all(when % 10 == 0) and when.min() == 110 and when.max() == 300 and len(when) == 20
    assert np.all(overall[:109] == 0) and np.all(np.diff(overall) >= 0)
    sizes = [m.size for m in jax.tree.leaves(select_member(state.masks, 0))]
    for t, counts in zip(np.arange(1, 401), layer_counts):
        last = when[when <= t].max() if np.any(when <= t) else None
        target = 0.0 if last is None else float(op.schedule(last))
        for count, size in zip(counts, sizes):
            assert abs(count - target * size) <= 1
    for count, size in zip(layer_counts[-1], sizes):
        assert abs(count / size - 0.9) <= 1 / size
    assert abs(overall[-1] - 0.9) < 0.01
    # Biases and LayerNorm parameters are never masked.
    assert state.masks.torso.layers[0].bias is None and state.masks.torso.norms[0].weight is None


def test_pruned_weights_stay_zero_while_training():
    from sparseq.types import Batch

    learner = QLearner(make_network=make_network, optimizer=optax.adam(1e-2), num_actions=2, masked=True)
    state = learner.init(jax.random.key(1))
    op = PolyPrune(start_step=0, end_step=50, final_sparsity=0.8, every=5)
    op_state = op.init(state)

    def step(carry, t):
        ls, st = carry
        k = jax.random.split(jax.random.fold_in(jax.random.key(2), t), 3)
        batch = Batch(
            obs=jax.random.normal(k[0], (16, 4)),
            action=jax.random.randint(k[1], (16,), 0, 2),
            reward=jax.random.normal(k[2], (16,)),
            discount=jnp.full((16,), 0.99),
            next_obs=jax.random.normal(k[0], (16, 4)) + 0.1,
        )
        ls, _ = learner.update(ls, batch)
        st, ls, _ = op(st, ls, t, t + 1)
        return (ls, st), None

    (state, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(200)))((state, op_state))
    member, masks = select_member(state.online, 0), select_member(state.masks, 0)
    weights = [member.torso.layers[0].weight, member.torso.layers[1].weight, member.head.linear.weight]
    for w, m in zip(weights, jax.tree.leaves(masks)):
        assert bool(jnp.all(w[~m] == 0)) and abs(float(jnp.mean(~m)) - 0.8) < 0.02


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="start_step < end_step"):
        PolyPrune(start_step=10, end_step=10)
    with pytest.raises(ValueError, match="final_sparsity"):
        PolyPrune(start_step=0, end_step=10, final_sparsity=1.0)
