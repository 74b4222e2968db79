"""Options of the envpool collector (a pipeline file's [env] section) and the
collector they build. Environment-specific choices (which envpool options, frame-stack
padding) are values of this section that the env presets set, not guesses from the
task id."""

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from sparseq.stages.collect.envpool_collector import EnvpoolCollector
from sparseq.stages.options import Rule, StageOptions


@dataclass(frozen=True)
class AtariConfig(StageOptions):
    """envpool Atari options, sent with the task when env.envpool_options = "atari"."""

    repeat_action_probability: float = 0.25
    noop_max: int = 1
    """envpool 1.2.5 acts U{0..noop_max-1} + 1 - fire no-op frames at reset (fire = 1
    when use_fire_reset and the game has FIRE); 1 means no random no-op starts
    (docs/atari.md)."""
    frame_skip: int = 4
    stack_num: int = 4
    img_height: int = 84
    img_width: int = 84
    gray_scale: bool = True
    episodic_life: bool = False
    use_fire_reset: bool = False
    """Press FIRE once at reset; off in the Dopamine / Machado et al. protocol."""
    full_action_space: bool = False
    stack_padding: Literal["zeros", "repeat"] = "zeros"
    """Stack slots from before the episode start: zeros (Dopamine; the collector
    zeroes them) or copies of the first frame (envpool's own). Not an envpool option."""


@dataclass(frozen=True)
class EnvConfig(StageOptions):
    task_id: str = "CartPole-v1"
    num_envs: int = 1
    mode: Literal["xla", "host"] = "xla"
    """xla steps envpool inside the jitted loop; host steps through a callback."""
    max_episode_steps: int = 0
    """Episode cap in agent steps (a truncation); 0 keeps the task's default."""
    reward_clip: float = 0.0
    """Learning rewards clipped to [-c, c] when c > 0; returns always use raw rewards."""
    envpool_options: Literal["none", "atari"] = "none"
    """Which option table goes to envpool with the task: none, or [env.atari] (the
    atari preset sets it; its frame stacks then get the stack padding below)."""
    atari: AtariConfig = AtariConfig()

    def rules(self) -> list[Rule]:
        a = self.atari
        return [
            ("num_envs", self.num_envs >= 1, "must be >= 1"),
            ("max_episode_steps", self.max_episode_steps >= 0, "must be >= 0 (0 = task default)"),
            ("reward_clip", self.reward_clip >= 0, "must be >= 0 (0 = no clipping)"),
            ("atari.repeat_action_probability", 0 <= a.repeat_action_probability <= 1, "must be in [0, 1]"),
            ("atari.frame_skip", a.frame_skip >= 1, "must be >= 1"),
            ("atari.stack_num", a.stack_num >= 1, "must be >= 1"),
            ("atari.noop_max", a.noop_max >= 1, "must be >= 1 (1 = no no-op starts)"),
        ]


def env_options(env: EnvConfig) -> tuple[tuple[str, Any], ...]:
    """The keyword arguments `envpool.make` gets besides the task, seed and pool size."""
    options: dict[str, Any] = {}
    if env.max_episode_steps > 0:
        options["max_episode_steps"] = env.max_episode_steps
    if env.envpool_options == "atari":
        options.update(dataclasses.asdict(env.atari))
        # sparseq's own option (the collector and replay pad stacks), not envpool's.
        options.pop("stack_padding")
        # Learning-reward clipping is done by the collector so raw rewards stay visible.
        options["reward_clip"] = False
    return tuple(sorted(options.items()))


def zero_pad_stack(env: EnvConfig) -> int:
    """S when the collector zeroes pre-episode stack slots (Atari frame stacks with
    padding "zeros"), else 0."""
    if env.envpool_options == "atari" and env.atari.stack_padding == "zeros":
        return env.atari.stack_num
    return 0


def make_collector(env: EnvConfig, seed: int) -> EnvpoolCollector:
    return EnvpoolCollector(
        env.task_id,
        num_envs=env.num_envs,
        seed=seed,
        mode=env.mode,
        env_options=env_options(env),
        reward_clip=env.reward_clip,
        zero_pad_stack=zero_pad_stack(env),
    )
