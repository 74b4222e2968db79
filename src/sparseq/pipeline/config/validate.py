"""Range and consistency checks of a PipelineConfig; the first failure is raised as a
one-line ConfigError naming where the offending key was set.

Each stage's options carry their own range checks (`rules()`, next to the stage);
this module adds the run-level ones, the checks between sections, and the operators'
declared composition rules (one owner per role, `precedes` order). What an operator
needs from the learner is checked when the pipeline is built (sparseq.pipeline.config.build).
"""

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from sparseq.pipeline.config.coerce import coerce
from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.config.stage_entries import typed_options
from sparseq.pipeline.registry import StageKindError, resolve
from sparseq.pipeline.stage import Stage, operator_key, options_class
from sparseq.stages.collect.tasks import is_mujoco_task

SourceOf = Callable[[str], str]
Rule = tuple[str, bool, str]
Check = tuple[str, bool, str, Any]  # a rule with its full key and the value it checked


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def _checks(prefix: str, owner: Any, rules: list[Rule]) -> list[Check]:
    """`rules` with keys relative to `owner`, as checks with full keys and values."""
    return [(f"{prefix}{key}", ok, reason, _get(owner, key)) for key, ok, reason in rules]


def _run_rules(c: PipelineConfig) -> list[Rule]:
    return [
        ("run.total_steps", c.run.total_steps > 0, "must be > 0"),
        ("run.schedule_steps", c.run.schedule_steps >= 0, "must be >= 0 (0 = run.total_steps)"),
        ("run.log_every", c.run.log_every > 0, "must be > 0"),
        ("run.chunk_seconds", c.run.chunk_seconds > 0, "must be > 0"),
        ("run.seed", c.run.seed >= 0, "must be >= 0"),
        *_seeds_rules(c),
        ("run.checkpoint_every", c.run.checkpoint_every >= 0, "must be >= 0 (0 = only at the end)"),
        ("run.keep_checkpoints", c.run.keep_checkpoints >= 1, "must be >= 1"),
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
        ("eval.video", not c.eval.video or c.eval.every > 0, "needs eval.every > 0 (videos are made at evaluations)"),
        ("eval.video", not c.eval.video or is_mujoco_task(c.env.task_id), _not_renderable(c.env.task_id)),
        ("eval.video_episodes", c.eval.video_episodes >= 1, "must be >= 1"),
        ("eval.video_max_steps", c.eval.video_max_steps >= 1, "must be >= 1"),
        ("run.record_dataset", not (c.run.record_dataset and c.dataset.is_offline), "records online runs only"),
        (
            "run.record_dataset",
            not c.run.record_dataset or c.replay.dedup_frames == "off",
            "records vector observations (Minari); Atari frame stacks are not recorded yet",
        ),
        (
            "run.record_dataset",
            not c.run.record_dataset or c.run.checkpoint_replay,
            "needs run.checkpoint_replay (a resumed run re-reads open episodes from the replay)",
        ),
        (
            "run.record_dataset",
            not c.run.record_dataset or c.replay.capacity >= c.run.log_every + 2 * c.env.num_envs,
            f"needs replay.capacity ({c.replay.capacity}) >= run.log_every ({c.run.log_every}) + the longest"
            " episode: transitions are read from the replay between chunks",
        ),
    ]


def _seeds_rules(c: PipelineConfig) -> list[Rule]:
    seeds = c.run.seeds
    if not seeds:
        return []
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    alone = "trains one seed per process"
    return [
        ("run.seeds", min(seeds) >= 0, "must be >= 0"),
        ("run.seeds", not twice, f"seed {twice[0] if twice else 0} is given twice"),
        ("run.seeds", c.run.seed == 0, f"replaces run.seed ({c.run.seed}): give the seeds in one of them"),
        ("run.seeds", not c.dataset.is_offline, f"an offline run {alone} (a pack shares an environment pool)"),
        ("run.seeds", not c.run.record_dataset, f"run.record_dataset {alone}"),
        ("run.seeds", c.analysis.every == 0, f"[analysis] {alone} (sparseq analyze RUN/seed-<s> works after)"),
    ]


def _cross_rules(c: PipelineConfig) -> list[Rule]:
    n, u, n_step = c.env.num_envs, c.learner.options.update_every, c.learner.options.n_step
    every, churn_period = c.analysis.every, c.analysis.churn_period
    return [
        (
            "analysis.every",
            every == 0 or every % c.run.log_every == 0,
            f"must be a multiple of run.log_every ({c.run.log_every}): analyses ride on log points",
        ),
        (
            "analysis.churn_period",
            every == 0 or churn_period < every,
            f"must be below analysis.every ({every}): churn is read over the period before each analysis",
        ),
        ("learner.update_every", n % u == 0 or u % n == 0, f"must divide env.num_envs ({n}) or be a multiple of it"),
        (
            "replay.capacity",
            c.replay.capacity >= n * (n_step + 2),
            f"must hold at least {n_step + 2} steps of each of the {n} environments",
        ),
    ]


def _all_checks(c: PipelineConfig) -> list[Check]:
    """(key, ok, reason, value) for every check, in reading order."""
    checks = _checks("", c, _run_rules(c))
    checks += _checks("env.", c.env, c.env.rules()) + _checks("network.", c.network, c.network.rules())
    checks += _checks("learner.", c.learner.options, c.learner.options.rules())
    checks += _checks("replay.", c.replay, c.replay.rules())
    checks += _checks("dataset.", c.dataset, c.dataset.rules())
    checks += _checks("analysis.", c.analysis, c.analysis.rules())
    kinds = [op.kind for op in c.operators]
    for i, op in enumerate(c.operators):
        checks += _checks(f"{operator_key(kinds, i)}.", op.options, op.options.rules())
    checks += _checks("", c, _cross_rules(c))
    for extra in EXTRA_RULES:
        checks += _checks("", c, extra(c))
    return checks


# Other modules register their own checks here (for their own config sections).
EXTRA_RULES: list[Callable[[PipelineConfig], list[Rule]]] = []


def typed_stage(stage: Stage, role: str, key: str, python_path: tuple[str, ...], source_of: SourceOf) -> Stage:
    """`stage` with its options as its kind's dataclass (a Python config may give a
    dict, or None for the defaults)."""
    try:
        cls = resolve(stage.kind, role, python_path)
        options_cls = options_class(cls, role)
    except (StageKindError, TypeError) as error:
        raise ConfigError(source_of(f"{key}.kind"), str(error), f"{key}.kind", stage.kind) from None
    options = stage.options
    if options is None or isinstance(options, dict):
        options = typed_options(options_cls, options or {}, key, source_of(key), stage.kind)
    elif not isinstance(options, options_cls):
        raise ConfigError(
            source_of(key), f"options must be {options_cls.__name__} (or a dict)", f"{key}.options", options
        )
    return Stage(stage.kind, options)


def with_typed_stages(config: PipelineConfig, source_of: SourceOf) -> PipelineConfig:
    path = tuple(config.python_path)
    learner = typed_stage(config.learner, "learner", "learner", path, source_of)
    kinds = [op.kind for op in config.operators]
    operators = tuple(
        typed_stage(op, "operator", operator_key(kinds, i), path, source_of) for i, op in enumerate(config.operators)
    )
    return dataclasses.replace(config, learner=learner, operators=operators)


def _composition(config: PipelineConfig, source_of: SourceOf) -> None:
    """The operators' declared rules, per value sub-state (`on`): one owner per role,
    owners of the roles an operator `precedes` come after it."""
    owners: dict[tuple[str, str], int] = {}
    classes = [resolve(op.kind, "operator", tuple(config.python_path)) for op in config.operators]
    kinds = [op.kind for op in config.operators]

    def refuse(i: int, j: int, role: str, reason: str) -> None:
        key = f"{operator_key(kinds, i)}.kind"
        reason = reason.format(j=j, other=kinds[j], role=role.replace("_", " "))
        raise ConfigError(source_of(key), reason, key, kinds[i])

    for i, (cls, op) in enumerate(zip(classes, config.operators)):
        on = getattr(op.options, "on", "") or ""
        roles = cls.roles(op.options) if hasattr(cls, "roles") else getattr(cls, "owns", ())
        for role in roles:
            if (role, on) in owners:
                refuse(
                    i,
                    owners[role, on],
                    role,
                    "a second operator for the {role}: operator {j} ({other}) already does it",
                )
            owners[role, on] = i
        for role in getattr(cls, "precedes", ()):
            if (role, on) in owners:
                refuse(i, owners[role, on], role, "must come before operator {j} ({other}), which does the {role}")


def _type_errors(section: Any, prefix: str) -> list[tuple[str, str, Any]]:
    """(key, reason, value) for every field of the dataclass `section` (recursively)
    whose value does not have its declared type: a config built in Python skips the
    loader's checks of file and flag values."""
    errors = []
    hints = typing.get_type_hints(type(section))
    for field in dataclasses.fields(section):
        value, hint, key = getattr(section, field.name), hints.get(field.name), f"{prefix}{field.name}"
        if isinstance(value, Stage):
            if dataclasses.is_dataclass(value.options):
                errors += _type_errors(value.options, f"{prefix}{field.name}.")
        elif dataclasses.is_dataclass(value):
            errors += _type_errors(value, f"{key}.")
        elif field.name == "operators" and isinstance(value, tuple):
            kinds = [op.kind for op in value if isinstance(op, Stage)]
            for i, op in enumerate(value):
                if isinstance(op, Stage) and dataclasses.is_dataclass(op.options):
                    errors += _type_errors(op.options, f"{operator_key(kinds, i)}.")
        elif hint is not None and _is_checkable(hint):
            try:
                coerce(hint, value, from_text=False)
            except ValueError as error:
                errors.append((key, str(error), value))
    return errors


def _is_checkable(hint: Any) -> bool:
    return hint in (int, float, bool, str) or typing.get_origin(hint) in (typing.Literal, tuple)


def _not_renderable(task_id: str) -> str:
    return f"renders MuJoCo and DeepMind Control tasks only; {task_id!r} is not one"


def validate(config: PipelineConfig, source_of: SourceOf) -> PipelineConfig:
    """Checks `config`; returns it with typed stage options. Raises ConfigError."""
    config = with_typed_stages(config, source_of)
    for key, reason, value in _type_errors(config, ""):
        raise ConfigError(source_of(key), reason, key, value, has_value=True)
    for key, ok, reason, value in _all_checks(config):
        if not ok:
            raise ConfigError(source_of(key), reason, key, value, has_value=True)
    _composition(config, source_of)
    _check_task(config, source_of)
    return config


def _check_task(config: PipelineConfig, source_of: SourceOf) -> None:
    from sparseq.stages.collect.tasks import UnknownTaskError, check_task_id

    try:
        check_task_id(config.env.task_id)
    except UnknownTaskError as error:
        reason = str(error).split("; ", 1)
        message = "unknown envpool task id" + (f"; {reason[1]}" if len(reason) > 1 else "")
        raise ConfigError(source_of("env.task_id"), message, "env.task_id", config.env.task_id) from None
