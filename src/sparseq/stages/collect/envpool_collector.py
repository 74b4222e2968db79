"""Envpool collector: steps a pool of environments inside jit (XLA mode) or through a
host callback (host mode), behind one interface.

Envpool auto-resets: the step after `done` returns the first observation of the next
episode with reward 0 and ignores the action. The collector flags that step
(`is_reset_step`) so the replay never samples it as a transition.
"""

from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental import io_callback

from sparseq.stages.collect.tasks import check_task_id
from sparseq.types import EpisodeStats, Transition


class CollectorState(eqx.Module):
    handle: Array  # envpool XLA handle (opaque bytes); unused in host mode
    obs: Array  # (N, *obs_shape): current observation of every environment
    episode_return: Array  # (N,) float32: raw return of the running episode
    episode_length: Array  # (N,) int32
    needs_reset: Array  # (N,) bool: the next step is envpool's auto-reset step


class EnvpoolCollector(eqx.Module):
    """Discrete-action envpool collector.

    Attributes:
        task_id: envpool task id, e.g. "CartPole-v1" or "Pong-v5".
        num_envs: environments stepped together; every step yields N transitions.
        seed: seed of the pool (envpool's default is 42 for every pool, so it is
            always passed explicitly).
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
    seed: int = eqx.field(static=True)
    mode: Literal["xla", "host"] = eqx.field(static=True)
    env_options: tuple[tuple[str, Any], ...] = eqx.field(static=True)
    reward_clip: float = eqx.field(static=True)
    zero_pad_stack: int = eqx.field(static=True)
    env: Any = eqx.field(static=True, repr=False)
    xla_functions: Any = eqx.field(static=True, repr=False)
    obs_shape: tuple[int, ...] = eqx.field(static=True)
    obs_dtype: Any = eqx.field(static=True)
    num_actions: int = eqx.field(static=True)

    def __init__(
        self,
        task_id: str,
        *,
        num_envs: int = 1,
        seed: int = 0,
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
            seed=seed,
            **dict(self.env_options),
        )
        # Keep recv and step only: the first element is a numpy handle (unhashable).
        self.xla_functions = self.env.xla()[1:] if mode == "xla" else None
        space = self.env.action_space
        if not hasattr(space, "n"):
            raise ValueError(
                f"task {task_id!r} has a continuous action space; sparseq's Q-learners need discrete actions"
            )
        self.num_actions = int(space.n)
        self.obs_shape = tuple(self.env.observation_space.shape)
        self.obs_dtype = np.dtype(self.env.observation_space.dtype)

    def with_seed(self, seed: int) -> "EnvpoolCollector":
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
            handle, recv, _, _ = self.env.xla()
            self.env.async_reset()
            # envpool needs one recv after async_reset before the first in-jit step.
            handle, (obs, *_rest) = recv(handle)
        else:
            handle = jnp.zeros((1,), jnp.uint8)
            obs, _ = self.env.reset()
        n = self.num_envs
        return CollectorState(
            handle=handle,
            obs=self._pad_stack(jnp.asarray(obs, self.obs_dtype), jnp.zeros((n,), jnp.int32)),
            episode_return=jnp.zeros((n,), jnp.float32),
            episode_length=jnp.zeros((n,), jnp.int32),
            needs_reset=jnp.zeros((n,), bool),
        )

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

    def _env_step(self, handle: Array, actions: Array) -> tuple[Array, tuple[Array, ...]]:
        """Returns (handle, (next_obs, raw_reward, terminated, truncated))."""
        if self.mode == "xla":
            step = self.xla_functions[2]
            handle, (obs, reward, terminated, truncated, info) = step(handle, actions)
            raw = info["reward"] if isinstance(info, dict) and "reward" in info else reward
            return handle, (obs, raw.astype(jnp.float32), terminated, truncated)
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
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(actions))
        raw = info.get("reward", reward)
        return (
            np.asarray(obs, self.obs_dtype),
            np.asarray(raw, np.float32),
            np.asarray(terminated, bool),
            np.asarray(truncated, bool),
        )

    def step(self, state: CollectorState, actions: Array) -> tuple[CollectorState, Transition, EpisodeStats]:
        """Steps every environment once.

        Args:
            state: current collector state.
            actions: (N,) int32 actions, one per environment.
        """
        actions = actions.astype(jnp.int32)
        handle, (next_obs, raw_reward, terminated, truncated) = self._env_step(state.handle, actions)
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
