"""The soft actor-critic's actor: an MLP giving the mean and log standard deviation of
a Gaussian over pre-squash actions (the learner squashes with tanh)."""

import equinox as eqx
import jax
from jax import Array

from sparseq.stages.networks.initializers import Initializer, reinitialize
from sparseq.stages.networks.mlp import MLPTorso


class GaussianActor(eqx.Module):
    torso: MLPTorso
    out: eqx.nn.Linear
    action_dim: int = eqx.field(static=True)

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        action_dim: int,
        *,
        layer_norm: bool = False,
        init: Initializer = "lecun_normal",
        key: Array,
    ):
        torso_key, out_key = jax.random.split(key)
        self.torso = MLPTorso(in_features, hidden, layer_norm=layer_norm, init=init, key=torso_key)
        self.out = reinitialize(eqx.nn.Linear(self.torso.out_features, 2 * action_dim, key=out_key), out_key, init)
        self.action_dim = action_dim

    def __call__(self, obs: Array) -> tuple[Array, Array]:
        """obs: (*obs_shape) -> (mean (A,), log_std (A,)) before clipping."""
        out = self.out(self.torso(obs))
        return out[: self.action_dim], out[self.action_dim :]

    def batched(self, obs: Array) -> tuple[Array, Array]:
        """obs: (B, *obs_shape) -> (mean (B, A), log_std (B, A))."""
        return jax.vmap(self)(obs)
