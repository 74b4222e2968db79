"""Range and consistency checks of a PipelineConfig; the first failure is raised as a
one-line ConfigError naming where the offending key was set."""

from collections.abc import Callable
from typing import Any

from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.pruning_rules import pruning_rules
from sparseq.pipeline.config.schema import PipelineConfig

SourceOf = Callable[[str], str]


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _rules(config: PipelineConfig) -> list[tuple[str, bool, str]]:
    """(key, ok, reason) for every check, in reading order."""
    c = config
    rules = [
        ("run.total_steps", c.run.total_steps > 0, "must be > 0"),
        ("run.log_every", c.run.log_every > 0, "must be > 0"),
        ("run.seed", c.run.seed >= 0, "must be >= 0"),
        ("run.checkpoint_every", c.run.checkpoint_every >= 0, "must be >= 0 (0 = only at the end)"),
        ("run.keep_checkpoints", c.run.keep_checkpoints >= 1, "must be >= 1"),
        ("env.num_envs", c.env.num_envs >= 1, "must be >= 1"),
        ("env.max_episode_steps", c.env.max_episode_steps >= 0, "must be >= 0 (0 = task default)"),
        ("env.reward_clip", c.env.reward_clip >= 0, "must be >= 0 (0 = no clipping)"),
        ("env.atari.repeat_action_probability", 0 <= c.env.atari.repeat_action_probability <= 1, "must be in [0, 1]"),
        ("env.atari.frame_skip", c.env.atari.frame_skip >= 1, "must be >= 1"),
        ("env.atari.stack_num", c.env.atari.stack_num >= 1, "must be >= 1"),
        ("env.atari.noop_max", c.env.atari.noop_max >= 1, "must be >= 1 (1 = no no-op starts)"),
        ("network.hidden", all(h > 0 for h in c.network.hidden), "sizes must be > 0"),
        ("network.dense_units", c.network.dense_units > 0, "must be > 0"),
        ("learner.gamma", 0 <= c.learner.gamma <= 1, "must be in [0, 1]"),
        ("learner.n_step", c.learner.n_step >= 1, "must be >= 1"),
        ("learner.learning_rate", c.learner.learning_rate > 0, "must be > 0"),
        ("learner.adam_eps", c.learner.adam_eps > 0, "must be > 0"),
        ("learner.update_every", c.learner.update_every >= 1, "must be >= 1"),
        ("learner.warmup", c.learner.warmup >= 0, "must be >= 0"),
        ("replay.batch_size", c.replay.batch_size > 0, "must be > 0"),
        (
            "replay.capacity",
            c.replay.capacity >= c.replay.batch_size,
            f"must be >= replay.batch_size ({c.replay.batch_size})",
        ),
        ("exploration.start", 0 <= c.exploration.start <= 1, "must be in [0, 1]"),
        ("exploration.end", 0 <= c.exploration.end <= 1, "must be in [0, 1]"),
        ("exploration.decay_steps", c.exploration.decay_steps >= 0, "must be >= 0"),
        ("exploration.member_start", 0 <= c.exploration.member_start <= 1, "must be in [0, 1]"),
        ("exploration.member_end", 0 <= c.exploration.member_end <= 1, "must be in [0, 1]"),
        ("exploration.member_decay_steps", c.exploration.member_decay_steps >= 0, "must be >= 0"),
        ("eval.every", c.eval.every >= 0, "must be >= 0 (0 = no evaluation)"),
        ("eval.episodes", c.eval.episodes >= 1, "must be >= 1"),
        ("eval.max_steps", c.eval.max_steps >= 1, "must be >= 1"),
        ("eval.epsilon", 0 <= c.eval.epsilon <= 1, "must be in [0, 1]"),
        ("eval.num_envs", c.eval.num_envs >= 1, "must be >= 1"),
        ("operators.target_sync.period", c.operators.target_sync.period >= 1, "must be >= 1"),
    ]
    n, u = c.env.num_envs, c.learner.update_every
    rules.append(
        ("learner.update_every", n % u == 0 or u % n == 0, f"must divide env.num_envs ({n}) or be a multiple of it")
    )
    rules.append(
        (
            "replay.capacity",
            c.replay.capacity >= n * (c.learner.n_step + 2),
            f"must hold at least {c.learner.n_step + 2} steps of each of the {n} environments",
        )
    )
    rules.append(
        (
            "operators.target_sync.enabled",
            not (c.operators.target_sync.enabled and c.learner.target == "online"),
            "a target sync needs learner.target = 'network'",
        )
    )
    rules.append(
        (
            "learner.target",
            not (c.learner.target == "network" and not c.operators.target_sync.enabled),
            "a separate target network needs operators.target_sync.enabled = true",
        )
    )
    rules.extend(_isql_rules(c))
    rules.extend(pruning_rules(c))
    for check in EXTRA_RULES:
        rules.extend(check(c))
    return rules


def _isql_rules(c: PipelineConfig) -> list[tuple[str, bool, str]]:
    """iS-QL: K iterated heads and the shared-target window shift go together."""
    shift = c.operators.shared_target_shift
    return [
        ("network.iterations", c.network.iterations >= 0, "must be >= 0 (0 = one head)"),
        (
            "network.impala_channels",
            len(c.network.impala_channels) > 0 and all(ch > 0 for ch in c.network.impala_channels),
            "must be a non-empty list of sizes > 0",
        ),
        ("operators.shared_target_shift.period", shift.period >= 1, "must be >= 1"),
        (
            "operators.shared_target_shift.enabled",
            not (shift.enabled and c.network.iterations < 1),
            "the window shift needs network.iterations >= 1 (K + 1 heads)",
        ),
        (
            "operators.shared_target_shift.enabled",
            not (shift.enabled and c.learner.target != "online"),
            "the shared target (head 0) needs learner.target = 'online'",
        ),
        (
            "network.iterations",
            not (c.network.iterations >= 1 and not shift.enabled),
            "iterated heads need operators.shared_target_shift.enabled = true",
        ),
    ]


# Other modules register their own checks here (for their own config sections).
EXTRA_RULES: list[Callable[[PipelineConfig], list[tuple[str, bool, str]]]] = []


def validate(config: PipelineConfig, source_of: SourceOf) -> None:
    for key, ok, reason in _rules(config):
        if not ok:
            raise ConfigError(source_of(key), reason, key, _get(config, key), has_value=True)
    _check_task(config, source_of)


def _check_task(config: PipelineConfig, source_of: SourceOf) -> None:
    from sparseq.stages.collect.tasks import UnknownTaskError, check_task_id

    try:
        check_task_id(config.env.task_id)
    except UnknownTaskError as error:
        reason = str(error).split("; ", 1)
        message = "unknown envpool task id" + (f"; {reason[1]}" if len(reason) > 1 else "")
        raise ConfigError(source_of("env.task_id"), message, "env.task_id", config.env.task_id) from None
