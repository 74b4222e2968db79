"""Per-layer statistics of a network's prunable weights (Linear and Conv kernels)."""

from typing import Any

import jax.numpy as jnp
from jax import Array

from sparseq.stages.sparsity import init_masks, layer_names, masked_weights


def _named_weights(network: Any) -> list[tuple[str, Array]]:
    masks = init_masks(network)
    return list(zip(layer_names(masks), masked_weights(network, masks)))


def layer_zero_fractions(network: Any) -> dict[str, Array]:
    """{"overall": ..., layer: ...}: fraction of exactly-zero weights (pruned weights are
    held at exactly zero), per layer and over all prunable weights."""
    named = _named_weights(network)
    fractions = {name: jnp.mean(w == 0) for name, w in named}
    total = sum(w.size for _, w in named)
    zeros = sum(jnp.sum(w == 0) for _, w in named)
    return {"overall": zeros / max(total, 1), **fractions}


def layer_weight_norms(network: Any) -> dict[str, Array]:
    """{layer: ||W||_2} (Frobenius norm of each prunable layer's weights)."""
    return {name: jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)))) for name, w in _named_weights(network)}
