"""IMPALA ResNet torso (Espeholt et al. 2018) for 84x84 stacked uint8 frames.

Three stacks of: conv 3x3 -> max-pool 3x3 stride 2 (SAME) -> two residual blocks
(relu -> conv 3x3 -> relu -> conv 3x3, plus the skip), then relu, flatten, and one
dense layer. Channel sizes and the dense width follow the iS-QL authors' Atari runs
(32-64-64 and 512) rather than IMPALA's original 16-32-32 and 256; both are settings.

LayerNorm (optional) normalises over the feature axis before EVERY ReLU: the channels
at each position for convolutional maps, the units for the dense layer. (The authors'
Flax code puts it only before the first ReLU of each residual block and before the
final ReLU; sparseq applies the one rule "before each ReLU" uniformly across torsos.)
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.networks.initializers import Initializer, reinitialize


def channel_norm(norm: eqx.nn.LayerNorm | None, x: Array) -> Array:
    """LayerNorm over the channel axis at every position. x: (C, H, W) -> (C, H, W)."""
    if norm is None:
        return x
    return jax.vmap(jax.vmap(norm, in_axes=1, out_axes=1), in_axes=2, out_axes=2)(x)


def max_pool_same(x: Array) -> Array:
    """3x3 max-pool, stride 2, SAME padding (TF/Flax convention: output ceil(size / 2)).
    x: (C, H, W) -> (C, ceil(H / 2), ceil(W / 2))."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3), (1, 2, 2), "SAME")


def _pooled(size: int) -> int:
    return -(-size // 2)


class ResidualBlock(eqx.Module):
    """x + conv(relu(norm(conv(relu(norm(x)))))); channels unchanged."""

    convs: tuple[eqx.nn.Conv2d, eqx.nn.Conv2d]
    norms: tuple[eqx.nn.LayerNorm | None, eqx.nn.LayerNorm | None]

    def __init__(self, channels: int, *, layer_norm: bool, init: Initializer, key: Array):
        keys = jax.random.split(key, 2)
        self.convs = tuple(
            reinitialize(eqx.nn.Conv2d(channels, channels, 3, padding="SAME", key=k), k, init) for k in keys
        )
        self.norms = tuple(eqx.nn.LayerNorm(channels) if layer_norm else None for _ in keys)

    def __call__(self, x: Array) -> Array:
        """x: (C, H, W) -> (C, H, W)."""
        y = x
        for conv, norm in zip(self.convs, self.norms):
            y = conv(jax.nn.relu(channel_norm(norm, y)))
        return x + y


class ImpalaStack(eqx.Module):
    """conv 3x3 -> max-pool /2 -> two residual blocks."""

    conv: eqx.nn.Conv2d
    blocks: tuple[ResidualBlock, ResidualBlock]

    def __init__(self, in_channels: int, channels: int, *, layer_norm: bool, init: Initializer, key: Array):
        conv_key, *block_keys = jax.random.split(key, 3)
        self.conv = reinitialize(eqx.nn.Conv2d(in_channels, channels, 3, padding="SAME", key=conv_key), conv_key, init)
        self.blocks = tuple(ResidualBlock(channels, layer_norm=layer_norm, init=init, key=k) for k in block_keys)

    def __call__(self, x: Array) -> Array:
        """x: (C_in, H, W) -> (C, ceil(H / 2), ceil(W / 2))."""
        x = max_pool_same(self.conv(x))
        for block in self.blocks:
            x = block(x)
        return x


class ImpalaTorso(eqx.Module):
    """IMPALA ResNet torso; `out_features` = `dense_units`."""

    stacks: tuple[ImpalaStack, ...]
    final_norm: eqx.nn.LayerNorm | None
    dense: eqx.nn.Linear
    dense_norm: eqx.nn.LayerNorm | None
    out_features: int = eqx.field(static=True)

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        *,
        channels: tuple[int, ...] = (32, 64, 64),
        dense_units: int = 512,
        layer_norm: bool = False,
        init: Initializer = "xavier_uniform",
        key: Array,
    ):
        in_channels, height, width = obs_shape
        keys = jax.random.split(key, len(channels) + 1)
        stacks = []
        for k, out in zip(keys, channels):
            stacks.append(ImpalaStack(in_channels, out, layer_norm=layer_norm, init=init, key=k))
            in_channels = out
            height, width = _pooled(height), _pooled(width)
        self.stacks = tuple(stacks)
        self.final_norm = eqx.nn.LayerNorm(in_channels) if layer_norm else None
        flat = in_channels * height * width
        self.dense = reinitialize(eqx.nn.Linear(flat, dense_units, key=keys[-1]), keys[-1], init)
        self.dense_norm = eqx.nn.LayerNorm(dense_units) if layer_norm else None
        self.out_features = dense_units

    def __call__(self, obs: Array) -> Array:
        """obs: (C, H, W) uint8 frames -> (dense_units,) features."""
        return list(self.hidden_activations(obs).values())[-1]

    def hidden_activations(self, obs: Array) -> dict[str, Array]:
        """obs: (C, H, W) -> post-ReLU values of the residual stacks' output "stacks"
        (C, H', W') and of "dense" (dense_units,), the features (network analyses)."""
        x = obs.astype(jnp.float32) / 255.0
        for stack in self.stacks:
            x = stack(x)
        x = jax.nn.relu(channel_norm(self.final_norm, x))
        conv_features = x
        x = self.dense(jnp.ravel(x))
        if self.dense_norm is not None:
            x = self.dense_norm(x)
        return {"stacks": conv_features, "dense": jax.nn.relu(x)}
