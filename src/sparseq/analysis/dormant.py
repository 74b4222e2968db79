"""Dormant neurons (Sokar et al. 2023, "The dormant neuron phenomenon in deep RL")."""

import jax.numpy as jnp
from jax import Array


def dormant_scores(activations: Array) -> Array:
    """Each unit's normalised activation score: its mean |activation| over the batch
    divided by the layer's mean of those.

    activations: (B, U) -> (U,); all zeros for a layer whose units are all silent.
    """
    per_unit = jnp.mean(jnp.abs(activations.astype(jnp.float32)), axis=0)
    layer_mean = jnp.mean(per_unit)
    return jnp.where(layer_mean > 0, per_unit / jnp.where(layer_mean > 0, layer_mean, 1.0), 0.0)


def dormant_fraction(activations: Array, tau: float) -> Array:
    """Share of the layer's units whose score is <= tau (tau = 0: dead units only).

    activations: (B, U) -> () float32 in [0, 1].
    """
    return jnp.mean(dormant_scores(activations) <= tau)
