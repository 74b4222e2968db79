"""Nature CNN torso (Mnih et al. 2015) for 84x84 stacked uint8 frames."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.networks.initializers import Initializer, reinitialize

# (out_channels, kernel, stride) of the three convolutions.
NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))


def _conv_output_size(size: int) -> int:
    for _, kernel, stride in NATURE_CONVS:
        size = (size - kernel) // stride + 1
    return size


class NatureCNNTorso(eqx.Module):
    """Conv 32-64-64, then one dense layer of `dense_units` (512 in the paper).

    LayerNorm (optional) normalises over the feature axis before each ReLU: the
    channels at each position for convolutions, the units for the dense layer.
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    conv_norms: tuple[eqx.nn.LayerNorm | None, ...]
    dense: eqx.nn.Linear
    dense_norm: eqx.nn.LayerNorm | None
    out_features: int = eqx.field(static=True)

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        *,
        dense_units: int = 512,
        layer_norm: bool = False,
        init: Initializer = "xavier_uniform",
        key: Array,
    ):
        channels, height, width = obs_shape
        keys = jax.random.split(key, len(NATURE_CONVS) + 1)
        convs = []
        in_channels = channels
        for k, (out, kernel, stride) in zip(keys, NATURE_CONVS):
            conv = eqx.nn.Conv2d(in_channels, out, kernel, stride=stride, key=k)
            convs.append(reinitialize(conv, k, init))
            in_channels = out
        self.convs = tuple(convs)
        self.conv_norms = tuple(eqx.nn.LayerNorm(out) if layer_norm else None for out, _, _ in NATURE_CONVS)
        flat = in_channels * _conv_output_size(height) * _conv_output_size(width)
        self.dense = reinitialize(eqx.nn.Linear(flat, dense_units, key=keys[-1]), keys[-1], init)
        self.dense_norm = eqx.nn.LayerNorm(dense_units) if layer_norm else None
        self.out_features = dense_units

    def __call__(self, obs: Array) -> Array:
        """obs: (C, H, W) uint8 frames -> (dense_units,) features."""
        return list(self.hidden_activations(obs).values())[-1]

    def hidden_activations(self, obs: Array) -> dict[str, Array]:
        """obs: (C, H, W) -> post-ReLU values of each layer: "convs.i" (C_i, H_i, W_i)
        and "dense" (dense_units,), the features (network analyses)."""
        x = obs.astype(jnp.float32) / 255.0
        activations = []
        for i, (conv, norm) in enumerate(zip(self.convs, self.conv_norms)):
            x = conv(x)
            if norm is not None:
                x = jax.vmap(jax.vmap(norm, in_axes=1, out_axes=1), in_axes=2, out_axes=2)(x)
            x = jax.nn.relu(x)
            activations.append((f"convs.{i}", x))
        x = self.dense(jnp.ravel(x))
        if self.dense_norm is not None:
            x = self.dense_norm(x)
        activations.append(("dense", jax.nn.relu(x)))
        return dict(activations)
