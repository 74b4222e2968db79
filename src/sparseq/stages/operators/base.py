"""The operator protocol.

An operator is an Equinox module with
    init(learner_state) -> operator_state
    __call__(operator_state, learner_state, steps_before, steps_after)
        -> operator_state, learner_state, metrics
where steps are environment-step counters before and after the current iteration.
Operators gate themselves (usually on a period with `lax.cond`), so the pipeline calls
every operator at every iteration with no Python-side branching.
"""

from typing import Any

import equinox as eqx
from jax import Array

from sparseq.stages.learners.q_learner import LearnerState


def period_crossed(period: int, steps_before: Array, steps_after: Array) -> Array:
    """True when a multiple of `period` lies in (steps_before, steps_after]."""
    return (steps_after // period) > (steps_before // period)


class Operator(eqx.Module):
    def init(self, learner_state: LearnerState) -> Any:
        return ()

    def __call__(
        self, state: Any, learner_state: LearnerState, steps_before: Array, steps_after: Array
    ) -> tuple[Any, LearnerState, dict[str, Array]]:
        raise NotImplementedError
