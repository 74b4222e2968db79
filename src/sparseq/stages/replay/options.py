"""Options of the replay (a pipeline file's [replay] section) and the replay they build."""

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sparseq.stages.collect.options import EnvConfig
from sparseq.stages.options import Rule, StageOptions
from sparseq.stages.replay.frame_dedup import FrameDedupReplay
from sparseq.stages.replay.uniform import UniformReplay


@dataclass(frozen=True)
class ReplayConfig(StageOptions):
    capacity: int = 10_000
    batch_size: int = 32
    dedup_frames: Literal["on", "off"] = "off"
    """Store each frame of stacked-frame observations once (FrameDedupReplay, about 4x
    less memory at identical samples); the atari preset turns it on."""

    def rules(self) -> list[Rule]:
        return [
            ("batch_size", self.batch_size > 0, "must be > 0"),
            ("capacity", self.capacity >= self.batch_size, f"must be >= replay.batch_size ({self.batch_size})"),
        ]


def make_replay(
    replay: ReplayConfig,
    env: EnvConfig,
    *,
    n_step: int,
    gamma: float,
    obs_shape: tuple[int, ...],
    action_shape: tuple[int, ...] = (),
    action_dtype: Any = np.dtype(np.int32),
) -> UniformReplay:
    """UniformReplay, or FrameDedupReplay when `dedup_frames` is on (frame stacks of
    the [env.atari] table: each frame stored once). `action_shape` / `action_dtype`:
    one action of the collector (() int32 discrete, (A,) float32 continuous)."""
    common = dict(
        capacity=replay.capacity,
        batch_size=replay.batch_size,
        num_envs=env.num_envs,
        n_step=n_step,
        gamma=gamma,
        action_shape=tuple(action_shape),
        action_dtype=np.dtype(action_dtype),
    )
    if replay.dedup_frames == "off":
        return UniformReplay(**common)
    if len(obs_shape) != 3:
        raise ValueError(f"dedup_frames = 'on' needs frame-stack observations, got shape {obs_shape}")
    return FrameDedupReplay(**common, stack_num=env.atari.stack_num, padding=env.atari.stack_padding)
