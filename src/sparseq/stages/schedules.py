"""Schedules as plain functions of the environment step (optax style)."""

import jax.numpy as jnp
from jax import Array


def linear_epsilon(step: Array, *, start: float, end: float, decay_steps: int, warmup: int = 0) -> Array:
    """Dopamine's linearly decaying epsilon: `start` during warm-up, then linear to
    `end` over `decay_steps` environment steps, then `end`."""
    progress = jnp.clip((step - warmup) / max(decay_steps, 1), 0.0, 1.0)
    return start + (end - start) * progress
