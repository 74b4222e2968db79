"""Soft actor-critic losses and the squashed-Gaussian policy as small pure functions.

Shapes: B = batch, A = action dimensions, H' = critic heads being trained (1 for SAC,
K for iS-SAC); critic values carry a twin axis of 2 (clipped double Q).
"""

import math

import jax
import jax.numpy as jnp
from jax import Array

LOG_2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)


def tanh_log_det(pre_tanh: Array) -> Array:
    """log(1 - tanh(u)^2), elementwise, written stably as 2 (log 2 - u - softplus(-2u))."""
    return 2.0 * (LOG_2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def tanh_gaussian_log_prob(pre_tanh: Array, mean: Array, log_std: Array) -> Array:
    """log density of a = tanh(u), u ~ N(mean, exp(log_std)^2): (B, A) inputs -> (B,).
    The change of variables subtracts log |da/du| = log(1 - tanh(u)^2) per dimension."""
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * jnp.square(z) - log_std - 0.5 * LOG_2PI
    return jnp.sum(gaussian - tanh_log_det(pre_tanh), axis=-1)


def sample_tanh_gaussian(key: Array, mean: Array, log_std: Array) -> tuple[Array, Array]:
    """A reparameterised sample a = tanh(mean + std * eps) in (-1, 1)^A and its log
    density: (B, A) inputs -> (a (B, A), log_prob (B,))."""
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(pre_tanh), tanh_gaussian_log_prob(pre_tanh, mean, log_std)


def to_bounds(squashed: Array, low: Array, high: Array) -> Array:
    """Maps (-1, 1) to the action space [low, high] (per dimension)."""
    return low + 0.5 * (squashed + 1.0) * (high - low)


def soft_td_targets(reward: Array, discount: Array, next_values: Array, next_log_prob: Array, alpha: Array) -> Array:
    """y = r + discount * (min over twins Q'(s', a') - alpha log pi(a'|s')), no gradient.

    reward, discount, next_log_prob: (B,); next_values: (B, 2, H') -> (B, H').
    """
    soft_value = jnp.min(next_values, axis=1) - alpha * next_log_prob[:, None]
    return jax.lax.stop_gradient(reward[:, None] + discount[:, None] * soft_value)


def critic_losses(values: Array, targets: Array) -> Array:
    """Per-head critic losses: the batch mean of (Q_i - y)^2 summed over the twins i.

    values: (B, 2, H') of the heads being trained; targets: (B, H') -> (H',).
    """
    return jnp.sum(jnp.mean(jnp.square(values - targets[:, None, :]), axis=0), axis=0)


def actor_loss(q_values: Array, log_prob: Array, alpha: Array) -> Array:
    """mean(alpha log pi(a|s) - Q(s, a)) with a ~ pi(s) reparameterised.
    q_values, log_prob: (B,) -> ()."""
    return jnp.mean(jax.lax.stop_gradient(alpha) * log_prob - q_values)


def temperature_loss(log_alpha: Array, log_prob: Array, target_entropy: float) -> Array:
    """-mean(log_alpha (log pi + target_entropy)): raises alpha while the policy's entropy
    is below the target. log_prob: (B,) -> ()."""
    return -jnp.mean(log_alpha * jax.lax.stop_gradient(log_prob + target_entropy))
