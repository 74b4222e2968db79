"""Sparsity masks, magnitude pruning and sparsity statistics for Equinox networks.

A mask pytree has the structure of the network it masks: a bool array (True = kept,
False = pruned) at the weight of every Linear and Conv layer, and None at every other
leaf (biases, LayerNorm scales and offsets are never pruned). So
`jax.tree.map(f, network, masks, is_leaf=lambda x: x is None)` pairs each weight with
its mask.

Every function here takes ONE network. A population (stacked pytree, leading axis P)
is handled by the caller's `vmap`, and each member may be pruned by its own (traced)
amount: counts are computed from traced values and applied through ranks, never
through data-dependent shapes.

Pruning never revives a weight: a new mask is always a subset of the old one.
"""

from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

PRUNABLE_LAYERS = (eqx.nn.Linear, eqx.nn.Conv)
Criterion = Literal["layer", "global"]


def _is_none(node: Any) -> bool:
    return node is None


def _is_prunable_layer(node: Any) -> bool:
    return isinstance(node, PRUNABLE_LAYERS)


def init_masks(network: Any) -> Any:
    """Dense masks (all True) over the prunable weights of `network`, None elsewhere.

    Works on a single network or on a stacked population alike (the masks take the
    weights' shapes, leading axis included).
    """

    def layer_masks(node: Any) -> Any:
        if not _is_prunable_layer(node):
            return None
        empty = jax.tree.map(lambda _: None, node)
        return eqx.tree_at(lambda m: m.weight, empty, jnp.ones(node.weight.shape, bool), is_leaf=_is_none)

    return jax.tree.map(layer_masks, network, is_leaf=_is_prunable_layer)


def apply_masks(tree: Any, masks: Any) -> Any:
    """Multiplies every array leaf that has a mask by it (masks hold None elsewhere).

    `tree` is a network or anything shaped like its parameters (gradients, optimizer
    moments); masks None means dense and returns `tree` unchanged.
    """
    if masks is None:
        return tree
    return jax.tree.map(
        lambda x, m: x if m is None or x is None else x * m.astype(x.dtype),
        tree,
        masks,
        is_leaf=_is_none,
    )


def mask_optimizer_state(opt_state: Any, masks: Any) -> Any:
    """Zeroes the optimizer moments of pruned weights.

    Every node of `opt_state` of the network's own type (optax keeps moments as
    pytrees shaped like the parameters, e.g. Adam's mu and nu) is masked; counters
    and other leaves are left alone.
    """
    if masks is None:
        return opt_state
    network_type = type(masks)

    def is_moment(node: Any) -> bool:
        return isinstance(node, network_type)

    return jax.tree.map(
        lambda node: apply_masks(node, masks) if is_moment(node) else node,
        opt_state,
        is_leaf=is_moment,
    )


def masked_weights(network: Any, masks: Any) -> list[Array]:
    """The prunable weights of `network`, in the order of `jax.tree.leaves(masks)`."""
    selected = jax.tree.map(lambda w, m: None if m is None else w, network, masks, is_leaf=_is_none)
    return jax.tree.leaves(selected)


def layer_names(masks: Any) -> list[str]:
    """Stable names of the prunable layers ("torso.layers.0", "head.linear", ...),
    in the order of `jax.tree.leaves(masks)`."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(masks)[0]:
        parts = []
        for key in path:
            if isinstance(key, jax.tree_util.GetAttrKey):
                parts.append(key.name)
            elif isinstance(key, jax.tree_util.SequenceKey):
                parts.append(str(key.idx))
            elif isinstance(key, jax.tree_util.DictKey):
                parts.append(str(key.key))
        if parts and parts[-1] == "weight":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _prune_lowest(scores: Array, mask: Array, num_pruned: Array) -> Array:
    """Mask with exactly max(num_pruned, already pruned) entries pruned.

    scores, mask: (n,) flat magnitudes and current mask. The weights pruned are the
    already-pruned ones plus the kept ones of lowest score (ties broken by position).
    A rank comparison, not a threshold, so the count is exact even with ties.
    """
    n = scores.shape[0]
    keyed = jnp.where(mask, scores, -1.0)  # scores are >= 0: pruned weights rank first
    order = jnp.argsort(keyed, stable=True)
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    already = n - jnp.sum(mask, dtype=jnp.int32)
    return rank >= jnp.maximum(num_pruned, already)


def _round_count(x: Array) -> Array:
    return jnp.floor(x + 0.5).astype(jnp.int32)


def _weight_ndims(masks: Any) -> list[int]:
    """The number of axes of one layer's own weight (2 for Linear, 2 + spatial for Conv),
    in the order of `jax.tree.leaves(masks)`. A mask leaf with more axes belongs to layers
    stacked inside the network (a SAC critic's twins)."""

    def ndim(node: Any) -> int | None:
        if not _is_prunable_layer(node):
            return None
        return 2 + getattr(node, "num_spatial_dims", 0)

    return jax.tree.leaves(jax.tree.map(ndim, masks, is_leaf=_is_prunable_layer))


def _prune(network: Any, masks: Any, count_fn, criterion: Criterion) -> Any:
    """Shared body: count_fn(size, kept) -> total pruned count wanted in a group."""
    leaves, treedef = jax.tree.flatten(masks)
    weights = masked_weights(network, masks)
    scores = [jnp.abs(w).reshape(-1) for w in weights]
    flat_masks = [m.reshape(-1) for m in leaves]
    if criterion == "layer":
        new = []
        for s, m, leaf, ndim in zip(scores, flat_masks, leaves, _weight_ndims(masks)):
            # Layers stacked inside the network (twin critics) are ranked each on its own.
            groups = max(1, int(np.prod(leaf.shape[: leaf.ndim - ndim])))
            s, m = s.reshape(groups, -1), m.reshape(groups, -1)
            kept = jnp.sum(m, axis=1, dtype=jnp.int32)

            def prune_group(sg: Array, mg: Array, kg: Array, size: int = s.shape[1]) -> Array:
                return _prune_lowest(sg, mg, count_fn(size, kg))

            new.append(jax.vmap(prune_group)(s, m, kept).reshape(-1))
    elif criterion == "global":
        # One ranking over all prunable weights: layers with small weights lose more.
        all_scores = jnp.concatenate(scores)
        all_masks = jnp.concatenate(flat_masks)
        kept = jnp.sum(all_masks, dtype=jnp.int32)
        pruned = _prune_lowest(all_scores, all_masks, count_fn(all_scores.shape[0], kept))
        splits = [sum(s.shape[0] for s in scores[: i + 1]) for i in range(len(scores) - 1)]
        new = jnp.split(pruned, splits)
    else:
        raise ValueError(f"unknown pruning criterion {criterion!r}; expected 'layer' or 'global'")
    return jax.tree.unflatten(treedef, [n.reshape(m.shape) for n, m in zip(new, leaves)])


def prune_remaining(network: Any, masks: Any, fraction: Array | float, criterion: Criterion = "layer") -> Any:
    """New masks pruning `fraction` of the weights still kept, lowest magnitude first.

    criterion "layer": each layer loses round(fraction * its kept weights);
    "global": round(fraction * all kept weights) go, ranked across layers.
    `fraction` may be traced (a different value per member under vmap).
    """
    fraction = jnp.asarray(fraction, jnp.float32)

    def count(size: int, kept: Array) -> Array:
        return (size - kept) + _round_count(fraction * kept.astype(jnp.float32))

    return _prune(network, masks, count, criterion)


def prune_to_sparsity(network: Any, masks: Any, sparsity: Array | float, criterion: Criterion = "layer") -> Any:
    """New masks with round(sparsity * size) weights pruned per layer ("layer") or
    over all prunable weights ("global"); never fewer than already pruned."""
    sparsity = jnp.asarray(sparsity, jnp.float32)

    def count(size: int, kept: Array) -> Array:
        return _round_count(sparsity * size)

    return _prune(network, masks, count, criterion)


def sparsity_stats(masks: Any) -> dict[str, Array]:
    """Fraction of pruned weights: "overall" (among all prunable weights) and one
    entry per layer name. Masks None (dense) gives {}."""
    if masks is None:
        return {}
    leaves = jax.tree.leaves(masks)
    if not leaves:
        return {}
    pruned = [jnp.sum(~m, dtype=jnp.float32) for m in leaves]
    sizes = [m.size for m in leaves]
    stats = {"overall": sum(pruned) / sum(sizes)}
    for name, p, size in zip(layer_names(masks), pruned, sizes):
        stats[name] = p / size
    return stats


def overall_sparsity(masks: Any) -> Array:
    """() fraction of pruned weights among all prunable weights (0 when dense)."""
    stats = sparsity_stats(masks)
    return stats.get("overall", jnp.zeros((), jnp.float32))
