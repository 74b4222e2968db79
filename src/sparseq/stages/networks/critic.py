"""The soft actor-critic's critic: twin Q(s, a) networks, each an MLP over
concat(obs, action) under a multi-head output layer (K + 1 heads for iS-SAC).

Written batch-first (not vmapped per example) because the BatchNorm option normalises
over the whole batch: CrossQ passes (s, a) and (s', a') through the critic as ONE batch.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.networks.batch_norm import BatchNorm
from sparseq.stages.networks.heads import MultiHeadLinear
from sparseq.stages.networks.initializers import Initializer, reinitialize


class CriticNetwork(eqx.Module):
    """One Q(s, a): Linear -> [LayerNorm] -> ReLU -> [BatchNorm] per hidden layer, with
    a BatchNorm on the input too when `batch_norm` (CrossQ's layout), then H heads."""

    layers: tuple[eqx.nn.Linear, ...]
    layer_norms: tuple[eqx.nn.LayerNorm | None, ...]
    batch_norms: tuple[BatchNorm, ...] | None
    head: MultiHeadLinear

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        num_heads: int,
        *,
        layer_norm: bool = False,
        batch_norm: bool = False,
        batch_norm_momentum: float = 0.99,
        init: Initializer = "lecun_normal",
        key: Array,
    ):
        keys = jax.random.split(key, len(hidden) + 1)
        sizes = (in_features, *hidden)
        self.layers = tuple(
            reinitialize(eqx.nn.Linear(sizes[i], sizes[i + 1], key=keys[i]), keys[i], init) for i in range(len(hidden))
        )
        self.layer_norms = tuple(eqx.nn.LayerNorm(size) if layer_norm else None for size in hidden)
        self.batch_norms = tuple(BatchNorm(size, batch_norm_momentum) for size in sizes) if batch_norm else None
        self.head = MultiHeadLinear(sizes[-1], num_heads, 1, init, key=keys[-1])

    @property
    def num_heads(self) -> int:
        return self.head.num_heads

    def batched(self, obs: Array, action: Array, train: bool = False) -> tuple[Array, "CriticNetwork"]:
        """obs: (B, *obs_shape), action: (B, A) -> (values (B, H), the network with its
        BatchNorm running statistics updated when `train`)."""
        x = jnp.concatenate([obs.reshape(obs.shape[0], -1).astype(jnp.float32), action.astype(jnp.float32)], axis=1)
        norms = list(self.batch_norms or ())
        if norms:
            x, norms[0] = norms[0](x, train)
        for i, (layer, layer_norm) in enumerate(zip(self.layers, self.layer_norms)):
            x = jax.vmap(layer)(x)
            if layer_norm is not None:
                x = jax.vmap(layer_norm)(x)
            x = jax.nn.relu(x)
            if norms:
                x, norms[i + 1] = norms[i + 1](x, train)
        values = jax.vmap(self.head)(x)[..., 0]  # (B, H)
        updated = self if not norms else eqx.tree_at(lambda n: n.batch_norms, self, tuple(norms))
        return values, updated


class TwinCritic(eqx.Module):
    """Two independent critics stacked on a leading axis of 2 (clipped double Q)."""

    twins: CriticNetwork

    def __init__(self, make_critic, *, key: Array):
        self.twins = eqx.filter_vmap(make_critic)(jax.random.split(key, 2))

    @property
    def num_heads(self) -> int:
        return self.twins.head.num_heads

    def batched(self, obs: Array, action: Array, train: bool = False) -> tuple[Array, "TwinCritic"]:
        """obs: (B, *obs_shape), action: (B, A) -> (values (B, 2, H), the updated critic)."""
        dynamic, static = eqx.partition(self.twins, eqx.is_array)

        def one(params):
            return eqx.combine(params, static).batched(obs, action, train)

        values, updated = jax.vmap(one)(dynamic)
        twins = eqx.combine(eqx.filter(updated, eqx.is_array), static)
        return jnp.moveaxis(values, 0, 1), eqx.tree_at(lambda c: c.twins, self, twins)
