"""What the analyses read from a Q-network: every hidden layer's activations."""

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array


class AnalysisError(ValueError):
    """The network cannot be analysed (no hidden features); one line."""


def check_analysable(network: Any) -> None:
    """AnalysisError unless `network` is a Q-network whose torso reports hidden layers."""
    torso = getattr(network, "torso", None)
    if torso is None or not hasattr(torso, "hidden_activations") or not hasattr(network, "head"):
        raise AnalysisError(
            f"the network analyses read a Q-network's hidden layers; {type(network).__name__} has none "
            "(Q-learners only: learner.kind = 'q')"
        )
    if not getattr(torso, "layers", True):
        raise AnalysisError("the network has no hidden layer (network.hidden is empty): nothing to analyse")


def hidden_activations(network: Any, obs: Array) -> dict[str, Array]:
    """obs: (B, *obs_shape) -> {"torso.<layer>": (B, ...) post-activation values} of
    every hidden layer (keys sorted, as JAX returns dicts)."""
    check_analysable(network)
    named = jax.vmap(network.torso.hidden_activations)(obs)
    return {f"torso.{name}": value for name, value in named.items()}


def unit_activations(activations: Array) -> Array:
    """(B, U) for a dense layer, (B, C, H, W) for a convolution -> (B, U): a channel is one
    unit, its |activation| averaged over positions (how ReDo scores conv neurons)."""
    if activations.ndim <= 2:
        return activations
    return jnp.mean(jnp.abs(activations), axis=tuple(range(2, activations.ndim)))
