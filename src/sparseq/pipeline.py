"""Composes the stages into `init(key) -> TrainState` and a pure `step(state)`.

One iteration steps all N environments once, writes the N transitions, takes the
gradient steps that fall due (one every `update_every` environment steps, after
`warmup` steps), and lets every operator look at the step counters.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.collect.envpool_collector import CollectorState, EnvpoolCollector
from sparseq.learners.q_learner import LearnerState, QLearner
from sparseq.operators.base import Operator
from sparseq.replay.uniform import ReplayState, UniformReplay
from sparseq.schedules import linear_epsilon


class TrainState(eqx.Module):
    collector: CollectorState
    replay: ReplayState
    learner: LearnerState
    operators: tuple[Any, ...]
    env_steps: Array  # () int32: environment steps taken (all environments)
    key: Array


class Exploration(eqx.Module):
    """Linear epsilon-greedy schedule (Dopamine's): `start` during warm-up, then linear
    to `end` over `decay_steps` environment steps."""

    start: float = eqx.field(static=True, default=1.0)
    end: float = eqx.field(static=True, default=0.01)
    decay_steps: int = eqx.field(static=True, default=1_000)

    def epsilon(self, env_steps: Array, warmup: int) -> Array:
        return linear_epsilon(env_steps, start=self.start, end=self.end, decay_steps=self.decay_steps, warmup=warmup)


class Pipeline(eqx.Module):
    """Attributes:
    collector, replay, learner: the stages.
    operators: applied in order after the learner at every iteration.
    exploration: the epsilon schedule.
    warmup: environment steps before the first gradient step.
    update_every: environment steps per gradient step; it must divide N or be a
        multiple of N (N = collector.num_envs).
    """

    collector: EnvpoolCollector
    replay: UniformReplay
    learner: QLearner
    operators: tuple[Operator, ...] = ()
    exploration: Exploration = Exploration()
    warmup: int = eqx.field(static=True, default=1_000)
    update_every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        n, u = self.collector.num_envs, self.update_every
        if n % u and u % n:
            raise ValueError(f"update_every={u} must divide num_envs={n} or be a multiple of it")

    def init(self, key: Array) -> TrainState:
        """Builds the initial state (host side: resets the environments)."""
        learner_key, key = jax.random.split(key)
        learner_state = self.learner.init(learner_key)
        return TrainState(
            collector=self.collector.init(),
            replay=self.replay.init(self.collector.obs_shape, self.collector.obs_dtype),
            learner=learner_state,
            operators=tuple(op.init(learner_state) for op in self.operators),
            env_steps=jnp.zeros((), jnp.int32),
            key=key,
        )

    @property
    def updates_per_due_iteration(self) -> int:
        return max(self.collector.num_envs // self.update_every, 1)

    def _learn(self, learner_state: LearnerState, replay_state: ReplayState, key: Array):
        keys = jax.random.split(key, self.updates_per_due_iteration)
        sums = None
        for k in keys:
            batch = self.replay.sample(replay_state, k)
            learner_state, metrics = self.learner.update(learner_state, batch)
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
        return learner_state, jax.tree.map(lambda x: x / len(keys), sums)

    def step(self, state: TrainState, _: Any = None) -> tuple[TrainState, dict[str, Array]]:
        """One iteration; usable directly as a `lax.scan` body."""
        key, act_key, learn_key = jax.random.split(state.key, 3)
        n = self.collector.num_envs
        steps_before = state.env_steps
        steps_after = steps_before + n
        epsilon = self.exploration.epsilon(steps_before, self.warmup)
        actions = self.learner.act(state.learner, state.collector.obs, act_key, epsilon)
        collector_state, transition, episodes = self.collector.step(state.collector, actions)
        replay_state = self.replay.add(state.replay, transition)

        due = (steps_after // self.update_every) > (steps_before // self.update_every)
        ready = (steps_after >= self.warmup) & (self.replay.num_valid_starts(replay_state) > 0)
        shapes = jax.eval_shape(self._learn, state.learner, replay_state, learn_key)[1]

        def skip(ls: LearnerState, rs: ReplayState, k: Array):
            return ls, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        learner_state, learn_metrics = jax.lax.cond(
            due & ready, self._learn, skip, state.learner, replay_state, learn_key
        )
        operator_states = []
        operator_metrics: dict[str, Array] = {}
        for operator, op_state in zip(self.operators, state.operators):
            op_state, learner_state, metrics = operator(op_state, learner_state, steps_before, steps_after)
            operator_states.append(op_state)
            operator_metrics.update(metrics)

        new_state = TrainState(
            collector=collector_state,
            replay=replay_state,
            learner=learner_state,
            operators=tuple(operator_states),
            env_steps=steps_after,
            key=key,
        )
        metrics = {
            "env_steps": steps_after,
            "epsilon": epsilon,
            "updated": due & ready,
            "episode_return": episodes.episode_return,
            "episode_length": episodes.episode_length,
            "episode_done": episodes.done,
            **learn_metrics,
            **operator_metrics,
        }
        return new_state, metrics
