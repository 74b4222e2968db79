"""MLP torso: Linear -> [LayerNorm] -> ReLU, for vector observations."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.networks.initializers import Initializer, reinitialize


class MLPTorso(eqx.Module):
    layers: tuple[eqx.nn.Linear, ...]
    norms: tuple[eqx.nn.LayerNorm | None, ...]
    out_features: int = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        *,
        layer_norm: bool = False,
        init: Initializer = "lecun_normal",
        key: Array,
    ):
        keys = jax.random.split(key, max(len(hidden), 1))
        sizes = (in_features, *hidden)
        self.layers = tuple(
            reinitialize(eqx.nn.Linear(sizes[i], sizes[i + 1], key=keys[i]), keys[i], init) for i in range(len(hidden))
        )
        self.norms = tuple(eqx.nn.LayerNorm(size) if layer_norm else None for size in hidden)
        self.out_features = sizes[-1]

    def __call__(self, obs: Array) -> Array:
        """obs: (*obs_shape) -> (F,) features."""
        activations = self.hidden_activations(obs)
        return list(activations.values())[-1] if activations else jnp.ravel(obs).astype(jnp.float32)

    def hidden_activations(self, obs: Array) -> dict[str, Array]:
        """obs: (*obs_shape) -> {"layers.i": (units,)} post-ReLU values of every hidden
        layer, the last being the features (network analyses; empty with no hidden layer)."""
        x = jnp.ravel(obs).astype(jnp.float32)
        activations = []
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            x = layer(x)
            if norm is not None:
                x = norm(x)
            x = jax.nn.relu(x)
            activations.append((f"layers.{i}", x))
        return dict(activations)
