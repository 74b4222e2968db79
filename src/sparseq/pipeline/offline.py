"""Composes a dataset source, a learner and operators into `init(key)` and a pure
`cycle(state)`: offline RL.

The dataset source takes the collector's and the replay's place: it samples the same
n-step batches as the online replay (it IS the replay's sampler over a dataset read
from disk), so the learner and the operators are the online ones, unchanged. The
run's step counter is the gradient step: operators' periods (a target update every
2,000 steps, a pruning window) and schedules count gradient steps here where they
count environment steps online. The environments only evaluate (sparseq.runs.
periodic_eval, every `eval.every` gradient steps).
"""

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.pipeline.protocols import Learner, Operator
from sparseq.stages.datasets.source import DatasetSource
from sparseq.stages.datasets.stream import DatasetSpec


class OfflineState(eqx.Module):
    replay: Any  # the dataset in the replay's layout (read-only; re-read from disk on resume)
    learner: Any
    operators: tuple[Any, ...]
    gradient_steps: Array  # () int32: the run's step counter
    key: Array


class OfflinePipeline(eqx.Module):
    """Attributes:
    source: the dataset (a `DatasetSource`).
    learner: any learner; its `update` takes the dataset's batches.
    operators: applied in order after every gradient step, counting gradient steps.
    """

    source: DatasetSource
    learner: Learner
    operators: tuple[Operator, ...] = ()

    step_unit: ClassVar[str] = "gradient_steps"
    """What the run's step counter counts (metrics.jsonl's x axis)."""
    collector: ClassVar[None] = None  # no environment pool is stepped while learning
    saves_replay: ClassVar[bool] = False  # checkpoints leave the dataset on disk
    steps_per_cycle: ClassVar[int] = 1
    learning_starts: ClassVar[int] = 0
    seeds: ClassVar[None] = None  # one seed per run (packs of seeds step an environment pool)

    @property
    def member(self) -> "OfflinePipeline":
        return self

    @property
    def data_spec(self) -> DatasetSpec:
        """Where observations and actions come from (shapes, bounds): the dataset."""
        return self.source.spec

    @property
    def replay(self) -> Any:
        return self.source.replay

    def learns_in_cycle(self, cycle: int) -> bool:
        return True

    def init(self, key: Array) -> OfflineState:
        """Reads the dataset (host side) and initialises the learner and operators."""
        learner_key, key = jax.random.split(key)
        learner_state = self.learner.init(learner_key)
        return OfflineState(
            replay=self.source.load(),
            learner=learner_state,
            operators=tuple(op.init(learner_state) for op in self.operators),
            gradient_steps=jnp.zeros((), jnp.int32),
            key=key,
        )

    def cycle(self, state: OfflineState, learn: bool = True, unroll_collect: bool = False):
        """One gradient step on a batch from the dataset, then the operators. `learn`
        and `unroll_collect` exist for the runner's protocol (there is nothing to
        collect; every cycle learns)."""
        key, sample_key = jax.random.split(state.key)
        batch = self.source.sample(state.replay, sample_key)
        learner_state, learn_metrics = self.learner.update(state.learner, batch)
        steps_before, steps_after = state.gradient_steps, state.gradient_steps + 1
        operator_states, operator_metrics = [], {}
        for operator, op_state in zip(self.operators, state.operators):
            op_state, learner_state, metrics = operator(op_state, learner_state, steps_before, steps_after)
            operator_states.append(op_state)
            operator_metrics.update(metrics)
        new_state = OfflineState(state.replay, learner_state, tuple(operator_states), steps_after, key)
        return new_state, {
            "steps": steps_after,
            "updated": jnp.asarray(True),
            "gradient_steps": jnp.asarray(1, jnp.int32),
            **learn_metrics,
            **operator_metrics,
        }
