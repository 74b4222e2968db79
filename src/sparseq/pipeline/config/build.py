"""PipelineConfig -> the stage objects a Python user would build by hand."""

import dataclasses
from typing import Any

import jax
import optax

from sparseq.pipeline.compose import Exploration, Pipeline
from sparseq.pipeline.config.schema import EnvConfig, NetworkConfig, PipelineConfig
from sparseq.stages.collect.envpool_collector import EnvpoolCollector
from sparseq.stages.collect.tasks import is_atari_task
from sparseq.stages.learners.q_learner import QLearner
from sparseq.stages.networks import ImpalaTorso, MLPTorso, NatureCNNTorso, QNetwork
from sparseq.stages.operators.base import Operator
from sparseq.stages.operators.poly_prune import PolyPrune
from sparseq.stages.operators.prune_select import PruneSelect
from sparseq.stages.operators.shared_target_shift import SharedTargetShift
from sparseq.stages.operators.target_sync import TargetSync
from sparseq.stages.replay.frame_dedup import FrameDedupReplay
from sparseq.stages.replay.uniform import UniformReplay


def env_options(env: EnvConfig) -> tuple[tuple[str, Any], ...]:
    options: dict[str, Any] = {}
    if env.max_episode_steps > 0:
        options["max_episode_steps"] = env.max_episode_steps
    if is_atari_task(env.task_id):
        options.update(dataclasses.asdict(env.atari))
        # sparseq's own option (the collector and replay pad stacks), not envpool's.
        options.pop("stack_padding")
        # Learning-reward clipping is done by the collector so raw rewards stay visible.
        options["reward_clip"] = False
    return tuple(sorted(options.items()))


def make_collector(config: PipelineConfig, seed: int | None = None) -> EnvpoolCollector:
    env = config.env
    return EnvpoolCollector(
        env.task_id,
        num_envs=env.num_envs,
        seed=config.run.seed if seed is None else seed,
        mode=env.mode,
        env_options=env_options(env),
        reward_clip=env.reward_clip,
        zero_pad_stack=zero_pad_stack(env),
    )


def zero_pad_stack(env: EnvConfig) -> int:
    """S when the collector zeroes pre-episode stack slots (Atari, padding "zeros")."""
    if is_atari_task(env.task_id) and env.atari.stack_padding == "zeros":
        return env.atari.stack_num
    return 0


def make_replay(config: PipelineConfig, obs_shape: tuple[int, ...]) -> UniformReplay:
    """UniformReplay, or FrameDedupReplay for stacked-frame (Atari) observations: each
    frame stored once, about 4x less memory at identical samples."""
    env, replay, learner = config.env, config.replay, config.learner
    common = dict(
        capacity=replay.capacity,
        batch_size=replay.batch_size,
        num_envs=env.num_envs,
        n_step=learner.n_step,
        gamma=learner.gamma,
    )
    stacked = is_atari_task(env.task_id) and len(obs_shape) == 3
    if replay.dedup_frames == "off" or (replay.dedup_frames == "auto" and not stacked):
        return UniformReplay(**common)
    if not stacked:
        raise ValueError(f"replay.dedup_frames = 'on' needs an Atari task's frame stacks, got shape {obs_shape}")
    return FrameDedupReplay(**common, stack_num=env.atari.stack_num, padding=env.atari.stack_padding)


def num_heads(config: PipelineConfig) -> int:
    """Heads of the output layer: K + 1 for iS-QL (K = network.iterations), else 1."""
    return config.network.iterations + 1 if config.network.iterations >= 1 else 1


def population(config: PipelineConfig) -> int:
    """Online networks in the population: K for EauDeQN's pruning selection, else 1."""
    select = config.operators.prune_select
    return select.num_networks if select.enabled else 1


def is_masked(config: PipelineConfig) -> bool:
    """Whether the learner keeps sparsity masks (a pruning operator is on)."""
    return config.operators.prune_select.enabled or config.operators.poly_prune.enabled


def make_optimizer(config: PipelineConfig) -> optax.GradientTransformation:
    return optax.adam(config.learner.learning_rate, eps=config.learner.adam_eps)


def make_network_factory(network: NetworkConfig, obs_shape: tuple[int, ...], heads: int, num_actions: int):
    if network.kind in ("nature_cnn", "impala"):
        if len(obs_shape) != 3:
            raise ValueError(f"network.kind = {network.kind!r} needs image observations, got shape {obs_shape}")
        init = "xavier_uniform" if network.init == "auto" else network.init

        def make(key):
            torso_key, head_key = jax.random.split(key)
            if network.kind == "impala":
                torso = ImpalaTorso(
                    obs_shape,
                    channels=network.impala_channels,
                    dense_units=network.dense_units,
                    layer_norm=network.layer_norm,
                    init=init,
                    key=torso_key,
                )
            else:
                torso = NatureCNNTorso(
                    obs_shape, dense_units=network.dense_units, layer_norm=network.layer_norm, init=init, key=torso_key
                )
            return QNetwork(torso, heads, num_actions, init, key=head_key)

        return make
    init = "lecun_normal" if network.init == "auto" else network.init
    in_features = 1
    for size in obs_shape:
        in_features *= size

    def make(key):
        torso_key, head_key = jax.random.split(key)
        torso = MLPTorso(in_features, network.hidden, layer_norm=network.layer_norm, init=init, key=torso_key)
        return QNetwork(torso, heads, num_actions, init, key=head_key)

    return make


def make_learner(config: PipelineConfig, obs_shape: tuple[int, ...], num_actions: int) -> QLearner:
    learner = config.learner
    return QLearner(
        make_network=make_network_factory(config.network, obs_shape, num_heads(config), num_actions),
        optimizer=make_optimizer(config),
        num_actions=num_actions,
        population=population(config),
        masked=is_masked(config),
        target=learner.target,
        loss=learner.loss,
        online_forward=learner.online_forward,
    )


def make_operators(config: PipelineConfig) -> tuple[Operator, ...]:
    operators: list[Operator] = []
    total = config.run.total_steps
    poly = config.operators.poly_prune
    if poly.enabled:
        # Before the target sync, so a synced target is the freshly pruned network.
        operators.append(
            PolyPrune(
                start_step=round(poly.start * total),
                end_step=round(poly.end * total),
                final_sparsity=poly.final_sparsity,
                every=poly.every,
                criterion=poly.criterion,
            )
        )
    select = config.operators.prune_select
    if config.operators.target_sync.enabled and select.enabled:
        # EauDeQN's target update is the pruning selection, at the target-sync period.
        operators.append(
            PruneSelect(
                period=config.operators.target_sync.period,
                num_networks=select.num_networks,
                optimizer=make_optimizer(config),
                max_prune_fraction=select.max_prune_fraction,
                criterion=select.criterion,
                optimizer_state=select.optimizer_state,
                horizon_step=round(select.horizon * total),
            )
        )
    elif config.operators.target_sync.enabled:
        operators.append(TargetSync(config.operators.target_sync.period))
    if config.operators.shared_target_shift.enabled:
        operators.append(SharedTargetShift(config.operators.shared_target_shift.period))
    return tuple(operators)


def build_pipeline(config: PipelineConfig, *, collector: EnvpoolCollector | None = None) -> Pipeline:
    collector = collector or make_collector(config)
    learner = config.learner
    return Pipeline(
        collector=collector,
        replay=make_replay(config, collector.obs_shape),
        learner=make_learner(config, collector.obs_shape, collector.num_actions),
        operators=make_operators(config),
        exploration=Exploration(**dataclasses.asdict(config.exploration)),
        warmup=learner.warmup,
        update_every=learner.update_every,
    )
