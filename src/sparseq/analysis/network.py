"""All analyses of one Q-network on one batch of states, as one jittable function."""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from sparseq.analysis.dormant import dormant_fraction
from sparseq.analysis.features import hidden_activations, unit_activations
from sparseq.analysis.rank import srank
from sparseq.analysis.weights import layer_weight_norms, layer_zero_fractions


def greedy_actions(network: Any, obs: Array) -> Array:
    """obs: (B, *obs_shape) -> (B,) int32 argmax of the values the network acts on: its
    only head, or with iterated heads the mean of the online heads 1..H-1 (acting draws
    one of them per step; their mean is the deterministic policy they share)."""
    values = network.batched(obs)  # (B, H, A)
    values = values[:, 0] if values.shape[1] == 1 else jnp.mean(values[:, 1:], axis=1)
    return jnp.argmax(values, axis=-1).astype(jnp.int32)


def policy_churn(before: Array, after: Array) -> Array:
    """Share of the probe states whose greedy action changed. before, after: (B,) -> ()."""
    return jnp.mean(before != after)


def analyze_network(
    network: Any, obs: Array, metrics: Sequence[str], *, delta: float = 0.01, tau: float = 0.025
) -> dict[str, Array]:
    """obs: (B, *obs_shape) replay states -> {"analysis/...": scalar}:
    srank of the last hidden features, dormant fraction per hidden layer and over all
    units, zero-weight fraction and weight norm per layer. Churn needs two readings and
    is computed by the caller from `greedy_actions`."""
    out: dict[str, Array] = {}
    if "srank" in metrics or "dormant" in metrics:
        activations = hidden_activations(network, obs)
        if "srank" in metrics:
            features = jax.vmap(network.torso)(obs)  # (B, F): what the output layer reads
            out["analysis/srank"] = srank(features, delta)
        if "dormant" in metrics:
            units = {name: unit_activations(a) for name, a in activations.items()}
            fractions = {name: dormant_fraction(u, tau) for name, u in units.items()}
            total = sum(u.shape[1] for u in units.values())
            dormant = sum(fractions[name] * u.shape[1] for name, u in units.items())
            out["analysis/dormant/overall"] = dormant / total
            out.update({f"analysis/dormant/{name}": value for name, value in fractions.items()})
    if "sparsity" in metrics:
        out.update({f"analysis/sparsity/{name}": v for name, v in layer_zero_fractions(network).items()})
    if "weight_norm" in metrics:
        out.update({f"analysis/weight_norm/{name}": v for name, v in layer_weight_norms(network).items()})
    return out
