"""Frame-deduplicated replay for stacked-frame (Atari) observations.

envpool returns each observation as a stack of the last S frames, (S * c, H, W) with c
channels per frame (1 for grayscale), so consecutive observations share S - 1 frames.
Storing full stacks costs S times the memory (28 GB for 1M Atari transitions, 56 GB
with separate next states); this buffer stores each frame ONCE per environment stream
(the newest frame of every observation) and rebuilds the stacks of s and s' at sample
time, index for index equal to what `UniformReplay` would return from full stacks.

Layout (C = transition slots per stream, as in UniformReplay; S = stack size):
- the metadata (action, reward, end flags, auto-reset flag) lives in a ring of C slots
  exactly as in `UniformReplay`, so sampling, n-step folding and the set of valid
  starts are inherited unchanged;
- frames live in a ring of F = C + S - 1 slots: the S - 1 extra slots keep the history
  frames of the oldest stored transition, so every transition in the window can
  rebuild its full stack (a ring of only C frames would lose them after wrap-around);
- `episode_pos` (F slots, uint8) holds min(steps since the episode's first
  observation, S - 1): frame t - lag belongs to the same episode as observation t iff
  lag <= episode_pos[t]. It is written at `add` time from the previous entry (the
  entry after an auto-reset step starts a new episode), so it survives wrap-around.
  The next entry's position is carried as an (N,) cursor, `next_pos`, rather than read
  back from the rings: a write fused with a read of its own ring (or of the reset-flag
  ring) at another index cannot update it in place, so XLA copied both rings every
  step (2 MB a step at 1M transitions).

Frames from before the episode start are rebuilt as zeros (`padding="zeros"`, the
Dopamine protocol; sparseq's Atari collector zero-pads what the agent acts on the same
way) or as copies of the episode's first frame (`padding="repeat"`, what envpool itself
returns at reset). Pick the one that matches the collector, and the rebuilt stacks
equal the stored-stack ones exactly.

Auto-reset entries: their observation is the final observation of the ended episode
(the s' a truncated transition bootstraps from), so they continue the old episode's
positions; they are never sampled as starts (inherited rejection sampling).
"""

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.stages.replay.uniform import UniformReplay
from sparseq.types import Transition


class FrameDedupState(eqx.Module):
    frames: Array  # (F, N, c, H, W) uint8: newest frame of the observation at each step
    episode_pos: Array  # (F, N) uint8: min(position in episode, S - 1)
    action: Array  # (C, N) int32, or (C, N, A) float32
    reward: Array  # (C, N) float32
    terminated: Array  # (C, N) bool
    truncated: Array  # (C, N) bool
    is_reset_step: Array  # (C, N) bool
    count: Array  # () int32: time steps written so far (per stream)
    next_pos: Array  # (N,) uint8: episode_pos the next entry of each stream gets


class FrameDedupReplay(UniformReplay):
    """`UniformReplay` with observations stored as single frames.

    Attributes (besides UniformReplay's):
        stack_num: S, frames per observation (envpool's `stack_num`).
        padding: "zeros" or "repeat": how stack slots from before the episode start
            are filled (see the module docstring).
    """

    stack_num: int = eqx.field(static=True, default=4)
    padding: Literal["zeros", "repeat"] = eqx.field(static=True, default="zeros")

    @property
    def frame_slots(self) -> int:
        """F = C + S - 1: the transition window plus the oldest one's history."""
        return self.slots + self.stack_num - 1

    def _frame_shape(self, obs_shape: tuple[int, ...]) -> tuple[int, ...]:
        channels, *rest = obs_shape
        if channels % self.stack_num:
            raise ValueError(f"observation shape {obs_shape} is not a stack of {self.stack_num} frames")
        return (channels // self.stack_num, *rest)

    def init(self, obs_shape: tuple[int, ...], obs_dtype) -> FrameDedupState:
        """obs_shape: (S * c, H, W), the stacked observation envpool returns."""
        f, n = self.frame_slots, self.num_envs
        return FrameDedupState(
            frames=jnp.zeros((f, n, *self._frame_shape(obs_shape)), obs_dtype),
            episode_pos=jnp.zeros((f, n), jnp.uint8),
            **self.empty_metadata(),
            next_pos=jnp.zeros((n,), jnp.uint8),  # as after the all-True initial flags
        )

    def add(self, state: FrameDedupState, transition: Transition) -> FrameDedupState:
        """Writes one time step of every stream; only the newest frame of the stack."""
        u = state.count
        slot, frame_slot = u % self.slots, u % self.frame_slots
        pos = state.next_pos
        channels = state.frames.shape[2]
        newest = transition.obs[:, -channels:]  # (N, c, H, W)

        def write(buffer: Array, value: Array, index: Array) -> Array:
            return jax.lax.dynamic_update_index_in_dim(buffer, value.astype(buffer.dtype), index, 0)

        return FrameDedupState(
            frames=write(state.frames, newest, frame_slot),
            episode_pos=write(state.episode_pos, pos, frame_slot),
            action=write(state.action, transition.action, slot),
            reward=write(state.reward, transition.reward, slot),
            terminated=write(state.terminated, transition.terminated, slot),
            truncated=write(state.truncated, transition.truncated, slot),
            is_reset_step=write(state.is_reset_step, transition.is_reset_step, slot),
            count=u + 1,
            next_pos=self.position_after(pos, transition.is_reset_step),
        )

    def position_after(self, pos: Array, is_reset_step: Array) -> Array:
        """(N,) uint8 position of the entry after one at `pos` with these reset flags:
        the entry after an auto-reset entry starts an episode."""
        following = jnp.minimum(pos.astype(jnp.int32) + 1, self.stack_num - 1)
        return jnp.where(is_reset_step, 0, following).astype(jnp.uint8)

    def gather_obs(self, state: FrameDedupState, times: Array, envs: Array) -> Array:
        """Rebuilds stacks at absolute times `times` of streams `envs`, each (B,) int32
        -> (B, S * c, H, W). Needs count - F <= times - (S - 1), which holds for every
        start in the sampling window and its bootstrap step."""
        s = self.stack_num
        lags = jnp.arange(s - 1, -1, -1)  # oldest frame first, as envpool stacks them
        pos = state.episode_pos[times % self.frame_slots, envs].astype(jnp.int32)  # (B,)
        valid = lags[None, :] <= pos[:, None]  # (B, S)
        # Out-of-episode slots read the episode's first frame (masked below for zeros).
        lag = jnp.minimum(lags[None, :], pos[:, None])
        frames = state.frames[(times[:, None] - lag) % self.frame_slots, envs[:, None]]  # (B, S, c, H, W)
        if self.padding == "zeros":
            frames = jnp.where(valid[:, :, None, None, None], frames, jnp.zeros((), frames.dtype))
        b, _, c, *rest = frames.shape
        return frames.reshape(b, s * c, *rest)


def replay_bytes(
    capacity: int,
    obs_shape: tuple[int, ...],
    *,
    num_envs: int = 1,
    n_step: int = 1,
    stack_num: int = 4,
    dedup: bool = True,
    obs_itemsize: int = 1,
) -> int:
    """Bytes a replay state occupies, from shapes alone (nothing is allocated).

    obs_shape is the stacked observation, e.g. (4, 84, 84). Metadata per slot: int32
    action, float32 reward, three bool flags; plus one uint8 episode position per
    frame slot, and the (N,) uint8 next position, when deduplicating.
    """
    slots = max(capacity // num_envs, n_step + 2)
    obs_size = 1
    for dim in obs_shape:
        obs_size *= dim
    metadata = slots * num_envs * (4 + 4 + 3)
    if not dedup:
        return slots * num_envs * obs_size * obs_itemsize + metadata
    frame_slots = slots + stack_num - 1
    frame_size = obs_size // stack_num
    return frame_slots * num_envs * (frame_size * obs_itemsize + 1) + metadata + num_envs
