"""A dataset as ONE time-ordered stream in the replay's layout, and the replay state
built from it.

Every reader turns its format into a `Stream`: entry t holds the observation an
action was taken in, the action, the reward and the end flags; the next observation
of entry t is the observation of entry t + 1. After the last transition of an
episode comes an auto-reset entry (`is_reset_step`) holding the episode's final
observation, exactly as envpool's auto-reset step sits in the online replay. So the
offline replay samples with the online replay's code, and n-step windows, terminal
discounts and truncation bootstraps mean the same thing online and offline.

Stacked-frame datasets (Atari) keep one frame per entry (`Stream.obs` is (T, c, H, W)
and `DatasetSpec.stack_num` > 0): the frame-deduplicated replay rebuilds the stacks,
so N transitions cost about N x H x W bytes, not S copies.
"""

import dataclasses
from collections.abc import Iterable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from sparseq.stages.replay.frame_dedup import FrameDedupReplay, FrameDedupState
from sparseq.stages.replay.uniform import ReplayState, UniformReplay


class DatasetError(ValueError):
    """A dataset that cannot be read or does not fit the pipeline; one line, naming the
    file (or shard) and what is wrong."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a dataset holds, read from its metadata alone (no arrays loaded).

    obs_shape: one observation as the learner sees it ((S * c, H, W) for frame stacks).
    num_actions: A of a discrete action space, 0 for a continuous one.
    action_shape: () discrete, (A,) continuous; action_low / action_high its bounds.
    entries: stream entries (transitions + one auto-reset entry per episode).
    stack_num: S > 0 when entries hold single frames of S-frame stacks, else 0.
    """

    obs_shape: tuple[int, ...]
    obs_dtype: Any
    num_actions: int
    entries: int
    transitions: int
    episodes: int
    task_id: str = ""
    action_shape: tuple[int, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    stack_num: int = 0
    source: str = ""  # the path the dataset was read from (for messages)

    @property
    def continuous(self) -> bool:
        return len(self.action_shape) > 0

    @property
    def action_dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.continuous else np.int32)


class Stream(NamedTuple):
    """A dataset as one replay stream (numpy; T entries)."""

    obs: np.ndarray  # (T, *obs_shape), or (T, c, H, W) single frames when stack_num > 0
    action: np.ndarray  # (T,) int32, or (T, A) float32
    reward: np.ndarray  # (T,) float32
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray  # (T,) bool
    is_reset_step: np.ndarray  # (T,) bool


class Episode(NamedTuple):
    """One episode in Minari's convention: L transitions, L + 1 observations."""

    observations: np.ndarray  # (L + 1, *obs_shape)
    actions: np.ndarray  # (L,) or (L, A)
    rewards: np.ndarray  # (L,)
    terminations: np.ndarray  # (L,) bool
    truncations: np.ndarray  # (L,) bool


def episodes_to_stream(episodes: Iterable[Episode], action_shape: tuple[int, ...] = ()) -> Stream:
    """Concatenates episodes into one stream: each episode's L transition entries, then
    an auto-reset entry with its final observation. An episode that ends with neither
    flag (an unfinished one) is marked truncated: it bootstraps, like a time limit."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in Stream._fields}
    action_dtype = np.float32 if action_shape else np.int32
    for episode in episodes:
        length = len(episode.rewards)
        if length == 0:
            continue
        terminated = np.asarray(episode.terminations, bool).reshape(length).copy()
        truncated = np.asarray(episode.truncations, bool).reshape(length).copy()
        if not (terminated[-1] or truncated[-1]):
            truncated[-1] = True
        actions = np.asarray(episode.actions).reshape(length, *action_shape).astype(action_dtype)
        parts["obs"].append(np.asarray(episode.observations[: length + 1]))
        parts["action"].append(np.concatenate([actions, np.zeros((1, *action_shape), action_dtype)]))
        parts["reward"].append(np.concatenate([np.asarray(episode.rewards, np.float32).reshape(length), [0.0]]))
        parts["terminated"].append(np.concatenate([terminated, [False]]))
        parts["truncated"].append(np.concatenate([truncated, [False]]))
        reset = np.zeros(length + 1, bool)
        reset[-1] = True
        parts["is_reset_step"].append(reset)
    if not parts["obs"]:
        raise DatasetError("the dataset holds no transitions")
    return Stream(
        obs=np.concatenate(parts["obs"]),
        action=np.concatenate(parts["action"]),
        reward=np.concatenate(parts["reward"]).astype(np.float32),
        terminated=np.concatenate(parts["terminated"]),
        truncated=np.concatenate(parts["truncated"]),
        is_reset_step=np.concatenate(parts["is_reset_step"]),
    )


def stream_to_episodes(stream: Stream) -> list[Episode]:
    """The inverse of `episodes_to_stream` (entries after the last auto-reset entry,
    an unfinished episode, are dropped)."""
    episodes, start = [], 0
    for end in np.flatnonzero(stream.is_reset_step):
        if end > start:
            episodes.append(
                Episode(
                    observations=stream.obs[start : end + 1],
                    actions=stream.action[start:end],
                    rewards=stream.reward[start:end],
                    terminations=stream.terminated[start:end],
                    truncations=stream.truncated[start:end],
                )
            )
        start = end + 1
    return episodes


def episode_positions(is_reset_step: np.ndarray, stack_num: int) -> np.ndarray:
    """(T,) uint8 min(steps since the episode's first entry, S - 1), as FrameDedupReplay
    writes them: an entry after an auto-reset entry (and entry 0) starts an episode;
    the auto-reset entry itself continues the ended episode."""
    t = np.arange(len(is_reset_step))
    starts = np.ones(len(is_reset_step), bool)
    starts[1:] = is_reset_step[:-1]
    last_start = np.maximum.accumulate(np.where(starts, t, 0))
    return np.minimum(t - last_start, stack_num - 1).astype(np.uint8)


def replay_state_from_stream(replay: UniformReplay, stream: Stream, after: int = 0) -> ReplayState | FrameDedupState:
    """The state of a one-stream `replay` holding exactly `stream`, built directly (not
    by T adds; no wrap-around). `after` more auto-reset slots count as written (pass
    n_step): the replay never samples its last n starts, so every transition's n-step
    window then lies in the written part."""
    length = len(stream.reward)
    if replay.num_envs != 1 or replay.slots < length + after:
        needs = f"a dataset replay needs num_envs 1 and >= {length + after} slots"
        raise ValueError(f"{needs}, got {replay.num_envs} and {replay.slots}")
    slots = replay.slots

    def slotted(x: np.ndarray, fill: Any, rows: int = slots) -> jnp.ndarray:
        out = np.full((rows, 1, *x.shape[1:]), fill, x.dtype)
        out[:length, 0] = x
        return jnp.asarray(out)

    metadata = {
        "action": slotted(stream.action.astype(replay.action_dtype), 0),
        "reward": slotted(stream.reward.astype(np.float32), 0),
        "terminated": slotted(stream.terminated, False),
        "truncated": slotted(stream.truncated, False),
        "is_reset_step": slotted(stream.is_reset_step, True),
        "count": jnp.asarray(length + after, jnp.int32),
    }
    if isinstance(replay, FrameDedupReplay):
        frames = slotted(stream.obs, 0, replay.frame_slots)
        written = episode_positions(stream.is_reset_step, replay.stack_num)
        positions = slotted(written, 0, replay.frame_slots)
        last = (written[-1:], stream.is_reset_step[-1:]) if length and not after else (np.zeros(1, np.uint8), True)
        next_pos = replay.position_after(jnp.asarray(last[0]), jnp.asarray(last[1]))
        return FrameDedupState(frames=frames, episode_pos=positions, **metadata, next_pos=next_pos)
    return ReplayState(obs=slotted(stream.obs, 0), **metadata)
