"""Sparsity masks and magnitude pruning: which leaves are prunable, exact counts per
layer and globally, lowest magnitudes first, nested masks, and per-member amounts
under vmap."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.stages.learners.population import select_member
from sparseq.stages.networks import MLPTorso, NatureCNNTorso, QNetwork
from sparseq.stages.sparsity import (
    apply_masks,
    init_masks,
    layer_names,
    mask_optimizer_state,
    masked_weights,
    prune_remaining,
    prune_to_sparsity,
    sparsity_stats,
)


def mlp(key=0, layer_norm=False, hidden=(33, 17)) -> QNetwork:
    k1, k2 = jax.random.split(jax.random.key(key))
    return QNetwork(MLPTorso(5, hidden, layer_norm=layer_norm, key=k1), 1, 3, "lecun_normal", key=k2)


def pruned_counts(masks) -> list[int]:
    return [int(np.sum(~np.asarray(m))) for m in jax.tree.leaves(masks)]


def sizes(masks) -> list[int]:
    return [m.size for m in jax.tree.leaves(masks)]


def test_only_linear_and_conv_weights_are_prunable():
    net = mlp(layer_norm=True)
    masks = init_masks(net)
    assert layer_names(masks) == ["torso.layers.0", "torso.layers.1", "head.linear"]
    assert masks.torso.layers[0].bias is None and masks.head.linear.bias is None
    assert masks.torso.norms[0].weight is None and masks.torso.norms[0].bias is None
    assert all(m.dtype == jnp.bool_ and bool(m.all()) for m in jax.tree.leaves(masks))
    k1, k2 = jax.random.split(jax.random.key(0))
    cnn = QNetwork(NatureCNNTorso((4, 84, 84), dense_units=32, key=k1), 1, 6, "xavier_uniform", key=k2)
    cnn_masks = init_masks(cnn)
    assert layer_names(cnn_masks) == ["torso.convs.0", "torso.convs.1", "torso.convs.2", "torso.dense", "head.linear"]
    assert cnn_masks.torso.convs[0].weight.shape == cnn.torso.convs[0].weight.shape
    assert cnn_masks.torso.convs[0].bias is None


@pytest.mark.parametrize("fraction", [0.1, 0.2, 1 / 3, 0.5, 0.77])
def test_per_layer_fraction_of_remaining_is_exact_to_one_weight(fraction):
    net = mlp()
    masks = init_masks(net)
    first = prune_remaining(net, masks, fraction)
    for pruned, size in zip(pruned_counts(first), sizes(first)):
        assert abs(pruned - fraction * size) <= 1
    # A second round prunes `fraction` of what is left in each layer.
    net = apply_masks(net, first)
    second = prune_remaining(net, first, fraction)
    for before, after, size in zip(pruned_counts(first), pruned_counts(second), sizes(second)):
        assert abs((after - before) - fraction * (size - before)) <= 1


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.6, 0.95])
def test_per_layer_target_sparsity_is_exact_to_one_weight(sparsity):
    net = mlp(1)
    masks = prune_to_sparsity(net, init_masks(net), sparsity)
    stats = sparsity_stats(masks)
    for name, pruned, size in zip(layer_names(masks), pruned_counts(masks), sizes(masks)):
        assert abs(pruned - sparsity * size) <= 1
        assert abs(float(stats[name]) - sparsity) <= 1 / size + 1e-6
    assert abs(float(stats["overall"]) - sum(pruned_counts(masks)) / sum(sizes(masks))) < 1e-6


def test_lowest_magnitudes_go_first_per_layer_and_globally():
    net = mlp(2)
    for criterion in ("layer", "global"):
        masks = prune_remaining(net, init_masks(net), 0.4, criterion)
        weights = masked_weights(net, masks)
        groups = list(zip(weights, jax.tree.leaves(masks)))
        if criterion == "global":
            flat = (
                jnp.concatenate([w.ravel() for w in weights]),
                jnp.concatenate([m.ravel() for m in jax.tree.leaves(masks)]),
            )
            groups = [flat]
            assert abs(sum(pruned_counts(masks)) - 0.4 * sum(sizes(masks))) <= 1
        for w, m in groups:
            kept, pruned = jnp.abs(w)[m], jnp.abs(w)[~m]
            assert float(kept.min()) >= float(pruned.max())


def test_global_criterion_ranks_across_layers():
    """Scale one layer down: a global ranking prunes it first, a per-layer one does not."""
    net = mlp(3)
    net = eqx.tree_at(lambda n: n.torso.layers[1].weight, net, net.torso.layers[1].weight * 1e-3)
    masks = prune_remaining(net, init_masks(net), 0.1, "global")
    first, second, head = pruned_counts(masks)
    assert (first, head) == (0, 0)
    assert abs(second - 0.1 * sum(sizes(masks))) <= 1  # all of the global budget
    layer = sparsity_stats(prune_remaining(net, init_masks(net), 0.1, "layer"))
    assert abs(float(layer["torso.layers.0"]) - 0.1) < 0.02


def test_pruning_never_revives_a_weight():
    net = mlp(4)
    masks = prune_to_sparsity(net, init_masks(net), 0.5)
    # Scramble the weights so magnitudes no longer match the old mask.
    other = apply_masks(mlp(5), masks)
    tighter = prune_to_sparsity(other, masks, 0.3)  # lower target: nothing changes
    assert all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(tighter)))
    more = prune_remaining(other, masks, 0.5)
    for old, new in zip(jax.tree.leaves(masks), jax.tree.leaves(more)):
        assert not bool(jnp.any(new & ~old))


def test_vmap_gives_each_member_its_own_amount():
    net = mlp(6)
    masks = init_masks(net)
    fractions = jnp.array([0.0, 0.1, 0.45, 0.9])
    stacked = jax.vmap(lambda f: prune_remaining(net, masks, f))(fractions)
    for i, f in enumerate(np.asarray(fractions)):
        member = select_member(stacked, i)
        for pruned, size in zip(pruned_counts(member), sizes(member)):
            assert abs(pruned - f * size) <= 1
    overall = jax.vmap(lambda m: sparsity_stats(m)["overall"])(stacked)
    assert bool(jnp.all(jnp.diff(overall) > 0))


def test_masks_apply_to_weights_and_optimizer_moments_only():
    import optax

    net = mlp(7, layer_norm=True)
    masks = prune_to_sparsity(net, init_masks(net), 0.5)
    masked = apply_masks(net, masks)
    for w, m in zip(masked_weights(masked, masks), jax.tree.leaves(masks)):
        assert bool(jnp.all(w[~m] == 0)) and bool(jnp.all(w[m] != 0))
    assert bool(jnp.array_equal(masked.torso.layers[0].bias, net.torso.layers[0].bias))
    params = eqx.filter(net, eqx.is_array)
    optimizer = optax.adam(1e-3)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = optimizer.update(grads, optimizer.init(params), params)
    opt_state = mask_optimizer_state(opt_state, masks)
    mu = opt_state[0].mu
    assert int(opt_state[0].count) == 1
    for w, m in zip(masked_weights(mu, masks), jax.tree.leaves(masks)):
        assert bool(jnp.all(w[~m] == 0)) and bool(jnp.all(w[m] != 0))
    assert bool(jnp.all(mu.torso.norms[0].weight != 0))
