"""Weight initialisers matching the reference implementations (biases start at zero)."""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

Initializer = Literal["lecun_normal", "xavier_uniform", "torch_default"]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Equinox stores Linear weights as (out, in) and Conv weights as (out, in, *kernel)."""
    receptive = 1
    for size in shape[2:]:
        receptive *= size
    return shape[1] * receptive, shape[0] * receptive


def init_weight(key: Array, shape: tuple[int, ...], scheme: Initializer) -> Array:
    fan_in, fan_out = _fans(shape)
    if scheme == "lecun_normal":
        return jax.nn.initializers.truncated_normal(stddev=1.0)(key, shape) * jnp.sqrt(1.0 / fan_in) / 0.87962566
    if scheme == "xavier_uniform":
        limit = jnp.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, minval=-limit, maxval=limit)
    limit = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, minval=-limit, maxval=limit)


def reinitialize(layer: eqx.Module, key: Array, scheme: Initializer) -> eqx.Module:
    """Re-draws a Linear/Conv weight with `scheme` and zeroes its bias."""
    layer = eqx.tree_at(lambda m: m.weight, layer, init_weight(key, layer.weight.shape, scheme))
    if getattr(layer, "bias", None) is not None:
        layer = eqx.tree_at(lambda m: m.bias, layer, jnp.zeros_like(layer.bias))
    return layer
