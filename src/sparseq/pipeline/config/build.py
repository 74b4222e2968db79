"""PipelineConfig -> the stage objects a Python user would build by hand.

No per-method branching: the learner and each operator are built from their own
options (`from_options`, next to each stage); what an operator needs from the learner
is checked by the operator itself (its `init` on the learner's abstract state), and the
few rules about value states that no single stage can see are checked generically.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from sparseq.pipeline.compose import Exploration, Pipeline
from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.config.validate import with_typed_stages
from sparseq.pipeline.offline import OfflinePipeline
from sparseq.pipeline.registry import resolve
from sparseq.pipeline.seed_pack import PoolShare, SeedPack, pool_env_seeds
from sparseq.pipeline.stage import build_stage, operator_key
from sparseq.stages.collect.envpool_collector import EnvpoolCollector
from sparseq.stages.collect.options import env_options
from sparseq.stages.collect.options import make_collector as collector_from_env
from sparseq.stages.context import BuildContext
from sparseq.stages.datasets.options import make_dataset_source
from sparseq.stages.datasets.source import DatasetSource
from sparseq.stages.datasets.stream import DatasetError, DatasetSpec
from sparseq.stages.learners.value_state import has_value_state, value_state_of
from sparseq.stages.networks.options import make_network_factory
from sparseq.stages.replay.options import make_replay as replay_from_options

SourceOf = Callable[[str], str]
__all__ = ["build_pipeline", "env_options", "make_collector", "make_network_factory", "make_replay", "num_heads"]


def _unnamed_source(key: str) -> str:
    """Where a key of a Python-built config came from (no file to name)."""
    return "pipeline"


def make_collector(config: PipelineConfig, seed: int | None = None) -> EnvpoolCollector:
    return collector_from_env(config.env, config.run.seed if seed is None else seed)


def make_replay(config: PipelineConfig, obs_shape: tuple[int, ...], collector: Any = None):
    """The replay of `config`; `collector` gives the action spec (discrete int32 when None)."""
    learner = config.learner.options
    spec = {}
    if collector is not None and hasattr(collector, "action_shape"):
        spec = {"action_shape": collector.action_shape, "action_dtype": collector.action_dtype}
    return replay_from_options(
        config.replay, config.env, n_step=learner.n_step, gamma=learner.gamma, obs_shape=obs_shape, **spec
    )


def build_context(config: PipelineConfig, collector: Any) -> BuildContext:
    return shapes_context(
        config,
        tuple(collector.obs_shape),
        collector.obs_dtype,
        getattr(collector, "num_actions", 0),
        action_shape=tuple(getattr(collector, "action_shape", ())),
        action_low=tuple(getattr(collector, "action_low", ())),
        action_high=tuple(getattr(collector, "action_high", ())),
    )


def shapes_context(
    config: PipelineConfig,
    obs_shape: tuple[int, ...],
    obs_dtype: Any,
    num_actions: int,
    *,
    action_shape: tuple[int, ...] = (),
    action_low: tuple[float, ...] = (),
    action_high: tuple[float, ...] = (),
) -> BuildContext:
    return BuildContext(
        obs_shape=obs_shape,
        obs_dtype=obs_dtype,
        num_actions=num_actions,
        total_steps=config.run.schedule_steps or config.run.total_steps,
        sections={"network": config.network, "env": config.env, "replay": config.replay},
        action_shape=action_shape,
        action_low=action_low,
        action_high=action_high,
        task_id=config.env.task_id,
    )


def make_learner(config: PipelineConfig, context: BuildContext, source_of: SourceOf = _unnamed_source) -> Any:
    cls = resolve(config.learner.kind, "learner", tuple(config.python_path))
    try:
        return build_stage(cls, config.learner.options, context)
    except ValueError as error:
        raise ConfigError(source_of("learner.kind"), _line(error), "learner.kind", config.learner.kind) from None


def learner_for_shapes(
    config: PipelineConfig, obs_shape: tuple[int, ...], num_actions: int, action_dim: int = 0
) -> Any:
    """The learner of `config` for observations of `obs_shape` (no environment made):
    `num_actions` discrete actions, or with num_actions 0 a continuous space of
    `action_dim` dimensions in [-1, 1]."""
    box = {"action_shape": (action_dim,), "action_low": (-1.0,) * action_dim, "action_high": (1.0,) * action_dim}
    context = shapes_context(config, tuple(obs_shape), None, num_actions, **(box if action_dim else {}))
    return make_learner(with_typed_stages(config, _unnamed_source), context)


def make_operators(config: PipelineConfig, context: BuildContext, source_of: SourceOf = _unnamed_source) -> tuple:
    operators = []
    kinds = [op.kind for op in config.operators]
    for i, op in enumerate(config.operators):
        cls = resolve(op.kind, "operator", tuple(config.python_path))
        key = f"{operator_key(kinds, i)}.kind"
        try:
            operators.append(build_stage(cls, op.options, context))
        except ValueError as error:
            raise ConfigError(source_of(key), _line(error), key, op.kind) from None
    return tuple(operators)


def num_heads(config: PipelineConfig) -> int:
    """Heads of the output layer: K + 1 for iS-QL (K = network.iterations), else 1."""
    return config.network.num_heads


def _line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def check_needs(config: PipelineConfig, learner: Any, operators: tuple, source_of: SourceOf = _unnamed_source) -> None:
    """Each operator's `init` on the learner's abstract state (no arrays are made):
    an operator raises ValueError when the learner lacks what it needs. Then the
    value-state rules no single operator sees: a target network needs an operator that
    updates it; K + 1 heads need the window shift."""
    state = jax.eval_shape(learner.init, jax.random.key(0))
    kinds = [op.kind for op in config.operators]
    for i, op in enumerate(operators):
        key = f"{operator_key(kinds, i)}.kind"
        try:
            jax.eval_shape(op.init, state)
        except ValueError as error:
            raise ConfigError(source_of(key), _line(error), key, config.operators[i].kind) from None
    _check_analysis(config, state, operators, source_of)
    if not has_value_state(state):
        return
    values = value_state_of(state)
    default = getattr(state, "default_value", "")
    roles = {
        role
        for op in operators
        if getattr(op, "on", "") in ("", default)
        for role in (op.owned_roles() if hasattr(op, "owned_roles") else getattr(op, "owns", ()))
    }
    if values.target is not None and "target_update" not in roles:
        reason = "a separate target network needs an operator that updates it (target_sync, polyak or prune_select)"
        raise ConfigError(
            source_of("learner.target"), reason, "learner.target", getattr(config.learner, "target", None)
        )
    if getattr(values.online, "num_heads", 1) > 1 and "heads" not in roles:
        reason = "iterated heads need a shared_target_shift operator (the window shift)"
        raise ConfigError(source_of("network.iterations"), reason, "network.iterations", config.network.iterations)
    explores = config.exploration.member_start > 0 or config.exploration.member_end > 0
    if explores and not hasattr(learner, "with_random_acting_member"):
        reason = "acting with a random member needs a population learner (with_random_acting_member)"
        raise ConfigError(
            source_of("exploration.member_start"), reason, "exploration.member_start", config.exploration.member_start
        )


def _check_analysis(config: PipelineConfig, state: Any, operators: tuple, source_of: SourceOf) -> None:
    """[analysis] needs a Q-network with hidden layers, and churn needs a period."""
    from sparseq.analysis.features import check_analysable
    from sparseq.analysis.options import churn_period

    options = config.analysis
    if options.every <= 0:
        return
    try:
        check_analysable(value_state_of(state).online if has_value_state(state) else state)
    except ValueError as error:
        raise ConfigError(source_of("analysis.every"), _line(error), "analysis.every", options.every) from None
    if "churn" not in options.metrics:
        return
    period = churn_period(options, operators)
    if period <= 0:
        reason = "the pipeline has no target period (target_sync, prune_select or shared_target_shift): set one"
        raise ConfigError(source_of("analysis.churn_period"), reason, "analysis.churn_period", options.churn_period)
    if period >= options.every:
        reason = f"the churn period ({period} steps) must be below analysis.every ({options.every})"
        raise ConfigError(source_of("analysis.every"), reason, "analysis.every", options.every)


def _is_plain(value: Any) -> bool:
    if type(value) is tuple:
        return all(_is_plain(v) for v in value)
    return isinstance(value, int | float | str | bool | type(None))


def _simple_fields(stage: Any) -> dict[str, Any]:
    """A stage's configuration values (numbers, names, tuples of them)."""
    return {f.name: getattr(stage, f.name) for f in dataclasses.fields(stage) if _is_plain(getattr(stage, f.name))}


def check_pipeline_matches(config: PipelineConfig, pipeline: Pipeline | OfflinePipeline) -> None:
    """ValueError (one line) when `pipeline`'s learner or operators are not the ones
    `config` names: pipeline.toml would describe another run than the one trained."""
    if isinstance(pipeline, SeedPack):
        pipeline = pipeline.member
    if isinstance(pipeline, OfflinePipeline):
        # The given pipeline's dataset spec: the dataset is not described (nor the task's pool made) again.
        config, context = _offline_context(with_typed_stages(config, _unnamed_source), pipeline.source.spec)
    else:
        context = build_context(config, pipeline.collector)
    learner = make_learner(config, context)
    expected = make_operators(config, dataclasses.replace(context, learner=learner))
    names = lambda stages: [type(s).__name__ for s in stages]  # noqa: E731
    hint = "name your stages in config.learner / config.operators (Stage('module:Class', options))"
    if type(pipeline.learner) is not type(learner):
        raise ValueError(
            f"pipeline.learner is {type(pipeline.learner).__name__}, config names {config.learner.kind!r}; {hint}"
        )
    if names(pipeline.operators) != names(expected):
        raise ValueError(f"pipeline.operators are {names(pipeline.operators)}, config names {names(expected)}; {hint}")
    for i, (given, built) in enumerate(zip((pipeline.learner, *pipeline.operators), (learner, *expected))):
        if _simple_fields(given) != _simple_fields(built):
            kinds = [op.kind for op in config.operators]
            where = "learner" if i == 0 else operator_key(kinds, i - 1)
            differ = f"{_simple_fields(given)} vs {_simple_fields(built)}"
            raise ValueError(f"pipeline {where} options differ from config's: {differ}; {hint}")


def _dataset_source(config: PipelineConfig, source_of: SourceOf) -> DatasetSource:
    options = config.learner.options
    try:
        return make_dataset_source(
            config.dataset,
            batch_size=config.replay.batch_size,
            n_step=options.n_step,
            gamma=options.gamma,
            stack_padding=config.env.atari.stack_padding,
        )
    except DatasetError as error:
        raise ConfigError(source_of("dataset.path"), _line(error), "dataset.path", config.dataset.path) from None


def _check_dataset_fits_task(config: PipelineConfig, spec: DatasetSpec, source_of: SourceOf) -> None:
    """The dataset's observations and actions must be the evaluation task's."""
    pool = make_collector(dataclasses.replace(config, env=dataclasses.replace(config.env, num_envs=1)))
    task = {
        "observation shape": tuple(pool.obs_shape),
        "actions": getattr(pool, "num_actions", 0) or tuple(getattr(pool, "action_shape", ())),
    }
    pool.close()
    data = {"observation shape": tuple(spec.obs_shape), "actions": spec.num_actions or tuple(spec.action_shape)}
    for what, expected in task.items():
        if data[what] != expected:
            reason = f"the dataset's {what} is {data[what]}, the task {config.env.task_id}'s is {expected}"
            raise ConfigError(source_of("dataset.path"), reason, "dataset.path", config.dataset.path)


def _offline_context(config: PipelineConfig, spec: DatasetSpec) -> tuple[PipelineConfig, BuildContext]:
    """The config its stages are built from offline (the learner's warm-up and update
    period are environment-step knobs: offline every step is a gradient step) and the
    build context of the dataset's shapes."""
    options = dataclasses.replace(config.learner.options, warmup=0, update_every=1)
    config = dataclasses.replace(config, learner=dataclasses.replace(config.learner, options=options))
    context = shapes_context(
        config,
        tuple(spec.obs_shape),
        spec.obs_dtype,
        spec.num_actions,
        action_shape=tuple(spec.action_shape),
        action_low=tuple(spec.action_low),
        action_high=tuple(spec.action_high),
    )
    return config, context


def build_offline_pipeline(config: PipelineConfig, source_of: SourceOf = _unnamed_source) -> OfflinePipeline:
    """The OfflinePipeline of `config` (dataset.path set): the dataset source in the
    collector's place, the same learner and operators."""
    config = with_typed_stages(config, source_of)
    source = _dataset_source(config, source_of)
    spec = source.spec
    _check_dataset_fits_task(config, spec, source_of)
    config, context = _offline_context(config, spec)
    learner = make_learner(config, context, source_of)
    operators = make_operators(config, dataclasses.replace(context, learner=learner), source_of)
    check_needs(config, learner, operators, source_of)
    return OfflinePipeline(source=source, learner=learner, operators=operators)


def build_pipeline(
    config: PipelineConfig,
    *,
    collector: EnvpoolCollector | None = None,
    pool_seed: int | tuple[int, ...] | None = None,
    source_of: SourceOf = _unnamed_source,
) -> Pipeline | OfflinePipeline | SeedPack:
    """The Pipeline of `config` (an OfflinePipeline when it names a dataset, a SeedPack
    when it names run.seeds); ConfigError (one line) when its stages do not fit.
    `pool_seed`: the seed of the environment pool (a resumed run's boundary seed; the
    run seed when None), one per environment for a pack."""
    if config.dataset.is_offline:
        return build_offline_pipeline(config, source_of)
    if config.run.seeds and collector is None:
        return build_seed_pack(config, pool_seed, source_of)
    config = with_typed_stages(config, source_of)
    collector = collector or make_collector(config, seed=pool_seed)
    context = build_context(config, collector)
    learner = make_learner(config, context, source_of)
    operators = make_operators(config, dataclasses.replace(context, learner=learner), source_of)
    check_needs(config, learner, operators, source_of)
    options = config.learner.options
    try:
        replay = make_replay(config, collector.obs_shape, collector)
    except ValueError as error:
        key = "replay.dedup_frames"
        raise ConfigError(source_of(key), _line(error), key, config.replay.dedup_frames) from None
    return Pipeline(
        collector=collector,
        replay=replay,
        learner=learner,
        operators=operators,
        exploration=Exploration(**dataclasses.asdict(config.exploration)),
        warmup=options.warmup,
        update_every=options.update_every,
        overlap=options.overlap,
    )


def seed_config(config: PipelineConfig, seed: int) -> PipelineConfig:
    """The single-seed config of seed `seed` of a pack: what that seed's run folder
    records (a separate run of it trains the same)."""
    return dataclasses.replace(config, run=dataclasses.replace(config.run, seed=seed, seeds=()))


def build_seed_pack(
    config: PipelineConfig, pool_seed: tuple[int, ...] | None = None, source_of: SourceOf = _unnamed_source
) -> SeedPack:
    """The pack of `config.run.seeds`: one pool of S x N environments, each seed's
    stages built as its single-seed run builds them."""
    seeds, n = config.run.seeds, config.env.num_envs
    env_seeds = pool_seed if pool_seed is not None else pool_env_seeds(seeds, n, lambda s: s)
    pool = collector_from_env(dataclasses.replace(config.env, num_envs=len(seeds) * n), env_seeds)
    try:
        member = build_pipeline(seed_config(config, seeds[0]), collector=PoolShare(pool, n), source_of=source_of)
    except BaseException:
        pool.close()
        raise
    return SeedPack(member=member, collector=pool, seeds=tuple(seeds))
