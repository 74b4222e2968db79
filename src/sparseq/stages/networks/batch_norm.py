"""Batch normalisation as a pure function of a batch, with running statistics kept in
the module (CrossQ's critic): `train=True` normalises with the batch's own statistics
and returns the module with its running averages moved towards them; `train=False`
uses the running averages."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array


class BatchNorm(eqx.Module):
    """Attributes:
    scale, offset: (F,) learned affine parameters (never pruned).
    running_mean, running_var: (F,) statistics for `train=False`; they only change
        through the module a `train=True` call returns (no gradient reaches them).
    momentum: weight of the old running value in each update.
    """

    scale: Array
    offset: Array
    running_mean: Array
    running_var: Array
    momentum: float = eqx.field(static=True, default=0.99)
    eps: float = eqx.field(static=True, default=1e-5)

    def __init__(self, features: int, momentum: float = 0.99, eps: float = 1e-5):
        self.scale = jnp.ones((features,), jnp.float32)
        self.offset = jnp.zeros((features,), jnp.float32)
        self.running_mean = jnp.zeros((features,), jnp.float32)
        self.running_var = jnp.ones((features,), jnp.float32)
        self.momentum = momentum
        self.eps = eps

    def __call__(self, x: Array, train: bool) -> tuple[Array, "BatchNorm"]:
        """x: (B, F) -> (normalised (B, F), the module with updated running statistics)."""
        if train:
            mean, var = jnp.mean(x, axis=0), jnp.var(x, axis=0)
            m = self.momentum
            updated = eqx.tree_at(
                lambda n: (n.running_mean, n.running_var),
                self,
                (
                    m * self.running_mean + (1 - m) * jax.lax.stop_gradient(mean),
                    m * self.running_var + (1 - m) * jax.lax.stop_gradient(var),
                ),
            )
        else:
            mean, var = jax.lax.stop_gradient(self.running_mean), jax.lax.stop_gradient(self.running_var)
            updated = self
        normalised = (x - mean) * jax.lax.rsqrt(var + self.eps)
        return normalised * self.scale + self.offset, updated


def is_batch_norm(node: object) -> bool:
    return isinstance(node, BatchNorm)


def with_running_statistics(network: eqx.Module, source: eqx.Module) -> eqx.Module:
    """`network` with the running statistics of every BatchNorm taken from `source`
    (a network of the same structure): what an optimizer step must not change."""

    def take(node, other):
        if is_batch_norm(node):
            return eqx.tree_at(lambda n: (n.running_mean, n.running_var), node, (other.running_mean, other.running_var))
        return node

    return jax.tree.map(take, network, source, is_leaf=is_batch_norm)
