"""Envpool collector: steps a pool of environments inside jit (XLA mode) or through a
host callback (host mode), behind one interface, for discrete and continuous actions.

Envpool auto-resets: the step after `done` returns the first observation of the next
episode with reward 0 and ignores the action. The collector flags that step
(`is_reset_step`) so the replay never samples it as a transition.

Continuous tasks (MuJoCo, DeepMind Control) take float64 actions and return float64
observations, a Dict of named arrays for DeepMind Control. The collector's side of the
boundary is float32: observations are flattened (in the space's key order) and cast,
actions are cast to float64 only for envpool. In XLA mode envpool's calls are traced
under a scoped `jax.enable_x64` (the rest of the program keeps float32 defaults);
envpool's XLA functions corrupt the heap if called with x64 off (docs/stack-notes.md).
"""

import contextlib
import dataclasses
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental import io_callback

from sparseq.stages.collect.envpool_ffi import stable_calls
from sparseq.stages.collect.tasks import check_task_id
from sparseq.stages.compile_once import filter_jit_once
from sparseq.types import EpisodeStats, Transition


class CollectorState(eqx.Module):
    handle: Array  # envpool XLA handle (opaque bytes); unused in host mode
    obs: Array  # (N, *obs_shape): current observation of every environment
    episode_return: Array  # (N,) float32: raw return of the running episode
    episode_length: Array  # (N,) int32
    needs_reset: Array  # (N,) bool: the next step is envpool's auto-reset step


def _float64_scope(enabled: bool):
    """x64 on around envpool's own calls of a float64 task, nothing otherwise."""
    return jax.enable_x64(True) if enabled else contextlib.nullcontext()


class EnvpoolCollector(eqx.Module):
    """Envpool collector of discrete (int32 (N,)) or continuous (float32 (N, A)) actions.

    Attributes:
        task_id: envpool task id, e.g. "CartPole-v1" or "Pong-v5".
        num_envs: environments stepped together; every step yields N transitions.
        seed: seed of the pool, environment i seeded `seed + i` (envpool's default is
            42 for every pool, so it is always passed explicitly); or one seed per
            environment (a pack of seeds sharing one pool).
        mode: "xla" steps envpool inside jit; "host" steps through `io_callback`.
        env_options: extra `envpool.make` keyword arguments as (name, value) pairs.
        reward_clip: learning rewards are clipped to [-c, c] when c > 0; episode
            returns always use raw rewards.
        zero_pad_stack: S > 0 when observations are stacks of S frames along axis 0
            (envpool Atari): stack slots from before the episode's first frame are
            set to zeros, as the Dopamine protocol does, instead of envpool's copies
            of the first frame. The frame-dedup replay rebuilds the same zeros.
    """

    task_id: str = eqx.field(static=True)
    num_envs: int = eqx.field(static=True)
    seed: int | tuple[int, ...] = eqx.field(static=True)
    mode: Literal["xla", "host"] = eqx.field(static=True)
    env_options: tuple[tuple[str, Any], ...] = eqx.field(static=True)
    reward_clip: float = eqx.field(static=True)
    zero_pad_stack: int = eqx.field(static=True)
    env: Any = eqx.field(static=True, repr=False)
    xla_functions: Any = eqx.field(static=True, repr=False)
    obs_shape: tuple[int, ...] = eqx.field(static=True)
    obs_dtype: Any = eqx.field(static=True)
    num_actions: int = eqx.field(static=True)
    """A of a discrete action space; 0 for a continuous one."""
    action_shape: tuple[int, ...] = eqx.field(static=True)
    """() for discrete actions, (A,) for continuous ones."""
    action_dtype: Any = eqx.field(static=True)
    action_low: tuple[float, ...] = eqx.field(static=True)
    """Bounds of a continuous action space (empty for discrete)."""
    action_high: tuple[float, ...] = eqx.field(static=True)
    obs_keys: tuple[str, ...] = eqx.field(static=True)
    """Keys of a Dict observation, flattened in this order; empty for an array."""
    float64: bool = eqx.field(static=True)
    """envpool's side of the task is float64 (MuJoCo, DeepMind Control)."""

    def __init__(
        self,
        task_id: str,
        *,
        num_envs: int = 1,
        seed: int | tuple[int, ...] = 0,
        mode: Literal["xla", "host"] = "xla",
        env_options: tuple[tuple[str, Any], ...] = (),
        reward_clip: float = 0.0,
        zero_pad_stack: int = 0,
    ):
        import envpool

        check_task_id(task_id)
        self.task_id = task_id
        self.num_envs = num_envs
        self.seed = seed
        self.mode = mode
        self.env_options = tuple(env_options)
        self.reward_clip = reward_clip
        self.zero_pad_stack = zero_pad_stack
        self.env = envpool.make(
            task_id,
            env_type="gymnasium",
            num_envs=num_envs,
            seed=list(seed) if isinstance(seed, tuple) else seed,
            **dict(self.env_options),
        )
        space = self.env.action_space
        obs_space = self.env.observation_space
        self.obs_keys = tuple(obs_space.spaces) if hasattr(obs_space, "spaces") else ()
        if self.obs_keys:
            parts = [obs_space.spaces[k] for k in self.obs_keys]
            self.obs_shape = (sum(int(np.prod(p.shape)) for p in parts),)
            self.float64 = any(np.dtype(p.dtype) == np.float64 for p in parts)
        else:
            self.obs_shape = tuple(obs_space.shape)
            self.float64 = np.dtype(obs_space.dtype) == np.float64
        if hasattr(space, "n"):
            self.num_actions = int(space.n)
            self.action_shape, self.action_dtype = (), np.dtype(np.int32)
            self.action_low = self.action_high = ()
        else:
            self.num_actions = 0
            self.action_shape, self.action_dtype = tuple(space.shape), np.dtype(np.float32)
            self.action_low = tuple(float(x) for x in np.ravel(space.low))
            self.action_high = tuple(float(x) for x in np.ravel(space.high))
            self.float64 = self.float64 or np.dtype(space.dtype) == np.float64
        obs_dtype = np.dtype(obs_space.dtype) if not self.obs_keys else np.dtype(np.float64)
        self.obs_dtype = np.dtype(np.float32) if obs_dtype == np.float64 else obs_dtype
        # (recv, send): under names that do not change with the pool where the shim
        # builds (the loop's program is then cacheable, envpool_ffi), else envpool's own.
        with _float64_scope(self.float64):
            self.xla_functions = (stable_calls(self.env) or self.env.xla()[1:3]) if mode == "xla" else None

    @property
    def continuous(self) -> bool:
        return self.num_actions == 0

    def with_seed(self, seed: int | tuple[int, ...]) -> "EnvpoolCollector":
        """A collector over a new pool with the same options and another seed."""
        return EnvpoolCollector(
            self.task_id,
            num_envs=self.num_envs,
            seed=seed,
            mode=self.mode,
            env_options=self.env_options,
            reward_clip=self.reward_clip,
            zero_pad_stack=self.zero_pad_stack,
        )

    def close(self) -> None:
        self.env.close()

    def init(self) -> CollectorState:
        """Resets every environment (host side; call outside jit)."""
        if self.mode == "xla":
            with _float64_scope(self.float64):
                handle = self.env.xla()[0]
                self.env.async_reset()
                return self._first_state(handle)
        obs, _ = self.env.reset()
        return self._state_at(jnp.zeros((1,), jnp.uint8), self._flat_obs(obs))

    @filter_jit_once
    def _first_state(self, handle: Array) -> CollectorState:
        """The state after a reset (one program: eagerly, each op compiled its own)."""
        # envpool needs one recv after async_reset before the first in-jit step.
        handle, (obs, *_rest) = self.xla_functions[0](handle)
        return self._state_at(handle, self._flat_obs(obs))

    def _state_at(self, handle: Array, obs: Array) -> CollectorState:
        """The state of fresh episodes from their first observations obs (N, ...)."""
        n = self.num_envs
        return CollectorState(
            handle=handle,
            obs=self._pad_stack(jnp.asarray(obs), jnp.zeros((n,), jnp.int32)),
            episode_return=jnp.zeros((n,), jnp.float32),
            episode_length=jnp.zeros((n,), jnp.int32),
            needs_reset=jnp.zeros((n,), bool),
        )

    def _flat_obs(self, obs: Any) -> Array:
        """An observation batch as the collector's (N, *obs_shape) array of obs_dtype:
        a Dict's arrays flattened and concatenated in `obs_keys` order."""
        xp = np if self.mode == "host" else jnp
        if self.obs_keys:
            n = self.num_envs
            obs = xp.concatenate([xp.reshape(obs[k], (n, -1)).astype(self.obs_dtype) for k in self.obs_keys], axis=1)
        return obs.astype(self.obs_dtype)

    def _pad_stack(self, obs: Array, position: Array) -> Array:
        """Zeroes the frames of `obs` (N, S * c, ...) from before the episode start;
        `position` (N,) is the step of `obs` in its episode (0 = first observation)."""
        if not self.zero_pad_stack:
            return obs
        stack = self.zero_pad_stack
        channels = obs.shape[1] // stack
        # Channel i holds frame i // c; frame j (0 = oldest) lags by S - 1 - j steps.
        lag = stack - 1 - jnp.arange(obs.shape[1]) // channels
        keep = lag[None, :] <= position[:, None]  # (N, S * c)
        keep = keep.reshape(keep.shape + (1,) * (obs.ndim - 2))
        return jnp.where(keep, obs, jnp.zeros((), obs.dtype))

    def send(self, state: CollectorState, actions: Array) -> CollectorState:
        """Hands the actions to the pool and returns at once: envpool's threads step the
        environments while the program goes on, until `receive` waits for them (XLA
        mode; in host mode the step happens in `receive`).

        Args:
            actions: (N,) int32 actions, or (N, A) float32 for a continuous task.
        """
        if self.mode != "xla":
            return state
        send = self.xla_functions[1]
        with _float64_scope(self.float64):
            actions = actions.astype(self.action_dtype)
            if self.float64 and self.continuous:
                actions = actions.astype(jnp.float64)
            handle = send(state.handle, actions)
        return dataclasses.replace(state, handle=handle)

    def _receive_step(self, handle: Array, actions: Array) -> tuple[Array, tuple[Array, ...]]:
        """Returns (handle, (next_obs, raw_reward, terminated, truncated))."""
        if self.mode == "xla":
            recv = self.xla_functions[0]
            with _float64_scope(self.float64):
                handle, (obs, reward, terminated, truncated, info) = recv(handle)
                raw = info["reward"] if isinstance(info, dict) and "reward" in info else reward
                obs, raw = self._flat_obs(obs), raw.astype(jnp.float32)
            return handle, (obs, raw, terminated, truncated)
        n = self.num_envs
        shapes = (
            jax.ShapeDtypeStruct((n, *self.obs_shape), self.obs_dtype),
            jax.ShapeDtypeStruct((n,), jnp.float32),
            jax.ShapeDtypeStruct((n,), bool),
            jax.ShapeDtypeStruct((n,), bool),
        )
        out = io_callback(self._host_step, shapes, actions, ordered=True)
        return handle, out

    def _host_step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        actions = np.asarray(actions, np.float64 if self.continuous else np.int32)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        raw = info.get("reward", reward)
        return (
            np.asarray(self._flat_obs(obs), self.obs_dtype),
            np.asarray(raw, np.float32),
            np.asarray(terminated, bool),
            np.asarray(truncated, bool),
        )

    def step(self, state: CollectorState, actions: Array) -> tuple[CollectorState, Transition, EpisodeStats]:
        """Steps every environment once: `send`, then `receive`.

        Args:
            state: current collector state.
            actions: (N,) int32 actions, or (N, A) float32 for a continuous task.
        """
        return self.receive(self.send(state, actions), actions)

    def receive(self, state: CollectorState, actions: Array) -> tuple[CollectorState, Transition, EpisodeStats]:
        """Waits for the step of the `actions` sent last and returns the next state, the
        N transitions and the episode bookkeeping."""
        actions = actions.astype(self.action_dtype)
        handle, (next_obs, raw_reward, terminated, truncated) = self._receive_step(state.handle, actions)
        is_reset = state.needs_reset
        terminated = terminated & ~is_reset
        truncated = truncated & ~is_reset
        learn_reward = raw_reward
        if self.reward_clip > 0:
            learn_reward = jnp.clip(raw_reward, -self.reward_clip, self.reward_clip)
        transition = Transition(
            obs=state.obs,
            action=actions,
            reward=jnp.where(is_reset, 0.0, learn_reward),
            terminated=terminated,
            truncated=truncated,
            is_reset_step=is_reset,
        )
        done = terminated | truncated
        episode_return = jnp.where(is_reset, 0.0, state.episode_return + raw_reward)
        episode_length = jnp.where(is_reset, 0, state.episode_length + 1)
        stats = EpisodeStats(episode_return=episode_return, episode_length=episode_length, done=done)
        new_state = CollectorState(
            handle=handle,
            obs=self._pad_stack(next_obs.astype(self.obs_dtype), episode_length),
            episode_return=episode_return,
            episode_length=episode_length,
            needs_reset=done,
        )
        return new_state, transition, stats
