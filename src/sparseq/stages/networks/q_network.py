"""A Q-network: any torso with `out_features` under a multi-head output layer."""

import equinox as eqx
import jax
from jax import Array

from sparseq.stages.networks.heads import MultiHeadLinear
from sparseq.stages.networks.initializers import Initializer


class QNetwork(eqx.Module):
    torso: eqx.Module
    head: MultiHeadLinear

    def __init__(self, torso: eqx.Module, num_heads: int, num_actions: int, init: Initializer, *, key: Array):
        self.torso = torso
        self.head = MultiHeadLinear(torso.out_features, num_heads, num_actions, init, key=key)

    @property
    def num_heads(self) -> int:
        return self.head.num_heads

    def __call__(self, obs: Array) -> Array:
        """obs: (*obs_shape) -> (H, A) action values of every head."""
        return self.head(self.torso(obs))

    def batched(self, obs: Array) -> Array:
        """obs: (B, *obs_shape) -> (B, H, A)."""
        return jax.vmap(self)(obs)
