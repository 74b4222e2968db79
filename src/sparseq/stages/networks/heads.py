"""Multi-head linear output layer: one Linear with H * A outputs read as H heads."""

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from sparseq.stages.networks.initializers import Initializer, reinitialize


class MultiHeadLinear(eqx.Module):
    """H heads of A outputs each sharing one kernel (rows h*A .. (h+1)*A - 1 are head h).

    For iS-QL, head 0 is the shared target and heads 1..H-1 are the online heads.
    """

    linear: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)
    num_actions: int = eqx.field(static=True)

    def __init__(self, in_features: int, num_heads: int, num_actions: int, init: Initializer, *, key: Array):
        self.linear = reinitialize(eqx.nn.Linear(in_features, num_heads * num_actions, key=key), key, init)
        self.num_heads = num_heads
        self.num_actions = num_actions

    def __call__(self, features: Array) -> Array:
        """features: (F,) -> (H, A) values."""
        return self.linear(features).reshape(self.num_heads, self.num_actions)

    def shift_heads(self) -> "MultiHeadLinear":
        """head_i <- head_{i+1} for i < H - 1; the last head keeps its weights."""
        a = self.num_actions

        def shifted(values: Array) -> Array:
            return jnp.concatenate([values[a:], values[-a:]], axis=0)

        return eqx.tree_at(
            lambda m: (m.linear.weight, m.linear.bias),
            self,
            (shifted(self.linear.weight), shifted(self.linear.bias)),
        )
