"""PipelineConfig -> the stage objects a Python user would build by hand."""

import dataclasses
from typing import Any

import jax
import optax

from sparseq.collect.envpool_collector import EnvpoolCollector
from sparseq.collect.tasks import is_atari_task
from sparseq.config.schema import EnvConfig, NetworkConfig, PipelineConfig
from sparseq.learners.q_learner import QLearner
from sparseq.networks import MLPTorso, NatureCNNTorso, QNetwork
from sparseq.operators.base import Operator
from sparseq.operators.target_sync import TargetSync
from sparseq.pipeline import Exploration, Pipeline
from sparseq.replay.uniform import UniformReplay


def env_options(env: EnvConfig) -> tuple[tuple[str, Any], ...]:
    options: dict[str, Any] = {}
    if env.max_episode_steps > 0:
        options["max_episode_steps"] = env.max_episode_steps
    if is_atari_task(env.task_id):
        options.update(dataclasses.asdict(env.atari))
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
    )


def num_heads(config: PipelineConfig) -> int:
    """Heads of the output layer (overridden by the iS-QL configuration)."""
    return 1


def population(config: PipelineConfig) -> int:
    """Online networks in the population (overridden by the EauDeQN configuration)."""
    return 1


def make_network_factory(network: NetworkConfig, obs_shape: tuple[int, ...], heads: int, num_actions: int):
    if network.kind == "nature_cnn":
        if len(obs_shape) != 3:
            raise ValueError(f"network.kind = 'nature_cnn' needs image observations, got shape {obs_shape}")
        init = "xavier_uniform" if network.init == "auto" else network.init

        def make(key):
            torso_key, head_key = jax.random.split(key)
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
        optimizer=optax.adam(learner.learning_rate, eps=learner.adam_eps),
        num_actions=num_actions,
        population=population(config),
        target=learner.target,
        loss=learner.loss,
    )


def make_operators(config: PipelineConfig) -> tuple[Operator, ...]:
    operators: list[Operator] = []
    if config.operators.target_sync.enabled:
        operators.append(TargetSync(config.operators.target_sync.period))
    return tuple(operators)


def build_pipeline(config: PipelineConfig, *, collector: EnvpoolCollector | None = None) -> Pipeline:
    collector = collector or make_collector(config)
    learner = config.learner
    return Pipeline(
        collector=collector,
        replay=UniformReplay(
            capacity=config.replay.capacity,
            batch_size=config.replay.batch_size,
            num_envs=config.env.num_envs,
            n_step=learner.n_step,
            gamma=learner.gamma,
        ),
        learner=make_learner(config, collector.obs_shape, collector.num_actions),
        operators=make_operators(config),
        exploration=Exploration(config.exploration.start, config.exploration.end, config.exploration.decay_steps),
        warmup=learner.warmup,
        update_every=learner.update_every,
    )
