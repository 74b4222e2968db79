"""Uniform ring-buffer replay over time-ordered environment streams.

Layout: slot u % C of stream e holds what environment e saw at time step u: the
observation the action was taken in, the action, the reward, and the end flags. The
next observation of entry t is the observation of entry t + 1, so observations are
stored once. A frame-deduplicating Atari buffer can keep the same indexing and only
change how `obs` is stored and gathered.

Sampling is uniform over valid starts: a start t must lie in the stored window and
have its n-step window written (t + n <= newest), and must not be envpool's auto-reset
step. Invalid candidates are rejected: `candidates_per_sample` uniform draws are made
per batch element and the first valid ones kept, which is exactly uniform over the
valid starts (auto-reset steps are one per episode, so rejections are rare).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from sparseq.types import Batch, Transition


class ReplayState(eqx.Module):
    obs: Array  # (C, N, *obs_shape)
    action: Array  # (C, N) int32, or (C, N, A) float32 for continuous actions
    reward: Array  # (C, N) float32
    terminated: Array  # (C, N) bool
    truncated: Array  # (C, N) bool
    is_reset_step: Array  # (C, N) bool
    count: Array  # () int32: time steps written so far (per stream)


class UniformReplay(eqx.Module):
    """Attributes:
    capacity: transitions kept in total (all environments); C = capacity // N slots.
    batch_size: B, samples per `sample` call.
    num_envs: N, streams written per `add`.
    n_step: horizon of the returns.
    gamma: discount used to fold n-step rewards.
    candidates_per_sample: rejection-sampling draws per batch element.
    action_shape, action_dtype: one action as the collector takes it: () int32
        (discrete) or (A,) float32 (continuous).
    """

    capacity: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    num_envs: int = eqx.field(static=True)
    n_step: int = eqx.field(static=True, default=1)
    gamma: float = eqx.field(static=True, default=0.99)
    candidates_per_sample: int = eqx.field(static=True, default=4)
    action_shape: tuple[int, ...] = eqx.field(static=True, default=())
    action_dtype: Any = eqx.field(static=True, default=np.dtype(np.int32))

    @property
    def slots(self) -> int:
        return max(self.capacity // self.num_envs, self.n_step + 2)

    def empty_metadata(self) -> dict[str, Array]:
        """Per-slot actions, rewards and flags, shared by every buffer layout. All slots
        start as auto-reset steps: never sampled, and the first stored observation of a
        stream starts an episode."""
        c, n = self.slots, self.num_envs
        return {
            "action": jnp.zeros((c, n, *self.action_shape), self.action_dtype),
            "reward": jnp.zeros((c, n), jnp.float32),
            "terminated": jnp.zeros((c, n), bool),
            "truncated": jnp.zeros((c, n), bool),
            "is_reset_step": jnp.ones((c, n), bool),
            "count": jnp.zeros((), jnp.int32),
        }

    def init(self, obs_shape: tuple[int, ...], obs_dtype) -> ReplayState:
        return ReplayState(obs=jnp.zeros((self.slots, self.num_envs, *obs_shape), obs_dtype), **self.empty_metadata())

    def add(self, state: ReplayState, transition: Transition) -> ReplayState:
        """Writes one time step of every stream (in place when the state is donated)."""
        slot = state.count % self.slots

        def write(buffer: Array, value: Array) -> Array:
            return jax.lax.dynamic_update_index_in_dim(buffer, value.astype(buffer.dtype), slot, 0)

        return ReplayState(
            obs=write(state.obs, transition.obs),
            action=write(state.action, transition.action),
            reward=write(state.reward, transition.reward),
            terminated=write(state.terminated, transition.terminated),
            truncated=write(state.truncated, transition.truncated),
            is_reset_step=write(state.is_reset_step, transition.is_reset_step),
            count=state.count + 1,
        )

    def num_valid_starts(self, state: ReplayState) -> Array:
        """() int32: starts in the window whose n-step window is written (upper bound
        on the samplable transitions; auto-reset steps among them are rejected)."""
        oldest = jnp.maximum(state.count - self.slots, 0)
        newest_start = state.count - 1 - self.n_step
        return jnp.maximum(newest_start - oldest + 1, 0) * self.num_envs

    def sample_indices(self, state: ReplayState, key: Array) -> tuple[Array, Array]:
        """Returns (time_index, env_index), each (B,) int32, uniform over valid starts."""
        b = self.batch_size
        m = b * self.candidates_per_sample
        oldest = jnp.maximum(state.count - self.slots, 0)
        num_starts = jnp.maximum(state.count - self.n_step - oldest, 1)
        time_key, env_key = jax.random.split(key)
        times = oldest + jax.random.randint(time_key, (m,), 0, num_starts)
        envs = jax.random.randint(env_key, (m,), 0, self.num_envs)
        valid = ~state.is_reset_step[times % self.slots, envs]
        # The first B valid candidates, in draw order. (Same result as a stable argsort
        # of ~valid, without the sort: XLA:CPU's sort cost ~17 us per call here, a
        # fifth of a whole MLP learning step.)
        (order,) = jnp.nonzero(valid, size=b, fill_value=m)
        # If fewer than B candidates were valid (tiny buffers), reuse the first valid
        # one (candidate 0 when none is).
        fallback = jnp.where(order[0] < m, order[0], 0)
        order = jnp.where(order < m, order, fallback)
        return times[order], envs[order]

    def gather_obs(self, state: ReplayState, times: Array, envs: Array) -> Array:
        """Observations at absolute time steps `times` of streams `envs`, each (B,)
        int32 -> (B, *obs_shape). The frame-deduplicating buffer overrides this."""
        return state.obs[times % self.slots, envs]

    def gather(self, state: ReplayState, times: Array, envs: Array) -> Batch:
        """Builds n-step samples starting at (times, envs), each (B,) int32."""
        n = self.n_step
        offsets = jnp.arange(n)
        window = (times[:, None] + offsets[None, :]) % self.slots  # (B, n)
        env_col = envs[:, None]
        rewards = state.reward[window, env_col]
        terminated = state.terminated[window, env_col]
        ended = terminated | state.truncated[window, env_col]
        # alive[j]: no episode end strictly before offset j.
        ended_before = jnp.cumsum(ended, axis=1) - ended
        alive = ended_before == 0
        discounts = self.gamma ** offsets.astype(jnp.float32)
        reward = jnp.sum(jnp.where(alive, rewards * discounts, 0.0), axis=1)
        any_end = jnp.any(ended, axis=1)
        first_end = jnp.argmax(ended, axis=1)
        steps = jnp.where(any_end, first_end + 1, n)
        terminal = jnp.where(any_end, terminated[jnp.arange(times.shape[0]), first_end], False)
        discount = jnp.where(terminal, 0.0, self.gamma ** steps.astype(jnp.float32))
        return Batch(
            obs=self.gather_obs(state, times, envs),
            action=state.action[times % self.slots, envs],
            reward=reward,
            discount=discount,
            next_obs=self.gather_obs(state, times + steps, envs),
        )

    def sample(self, state: ReplayState, key: Array) -> Batch:
        times, envs = self.sample_indices(state, key)
        return self.gather(state, times, envs)
