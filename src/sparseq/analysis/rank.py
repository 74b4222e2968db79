"""Effective rank of features (Kumar et al. 2021, "Implicit under-parameterization")."""

import jax.numpy as jnp
from jax import Array


def srank(features: Array, delta: float = 0.01) -> Array:
    """srank_delta(Phi) = min{k : sum_{i<=k} sigma_i >= (1 - delta) sum_i sigma_i}.

    features: (B, F) -> () int32, the number of singular values of Phi (largest first)
    needed to hold a 1 - delta share of their sum; 0 for an all-zero matrix.
    """
    sigma = jnp.linalg.svd(features.astype(jnp.float32), compute_uv=False)  # descending
    total = jnp.sum(sigma)
    cumulative = jnp.cumsum(sigma)
    # A tiny tolerance so that exact ties at the threshold (e.g. delta = 0, or sigma
    # values summing exactly to the bound) count as reached despite float rounding.
    reached = cumulative >= (1.0 - delta) * total * (1 - 1e-6)
    rank = jnp.argmax(reached).astype(jnp.int32) + 1
    return jnp.where(total > 0, rank, 0)
