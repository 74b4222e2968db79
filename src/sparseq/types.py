"""Pytrees that flow between stages.

Shapes use N = number of environments, B = batch size, P = population size
(number of online networks), H = number of heads, A = number of actions.
"""

from typing import NamedTuple

from jax import Array


class Transition(NamedTuple):
    """One environment step of every environment, as the replay stores it.

    The replay keeps time-ordered streams, so the next observation of entry t is the
    observation of entry t + 1; it is not stored twice.
    """

    obs: Array  # (N, *obs_shape): observation the action was taken in
    action: Array  # (N,) int32, or (N, A) float32 for continuous actions
    reward: Array  # (N,) float32: learning reward (clipped if the preset says so)
    terminated: Array  # (N,) bool: the episode ended in a terminal state
    truncated: Array  # (N,) bool: the episode was cut by a time limit (bootstraps)
    is_reset_step: Array  # (N,) bool: envpool's auto-reset step, never a transition


class EpisodeStats(NamedTuple):
    """Fixed-shape episode bookkeeping: values are meaningful where `done` is True."""

    episode_return: Array  # (N,) float32: undiscounted return with raw rewards
    episode_length: Array  # (N,) int32
    done: Array  # (N,) bool: an episode finished at this step


class Batch(NamedTuple):
    """An n-step sample: y = reward + discount * bootstrap(next_obs)."""

    obs: Array  # (B, *obs_shape)
    action: Array  # (B,) int32, or (B, A) float32 for continuous actions
    reward: Array  # (B,) float32: discounted n-step return
    discount: Array  # (B,) float32: gamma^k, or 0 when the window ends in termination
    next_obs: Array  # (B, *obs_shape)
