"""Learners: a Q-learner over a population of (possibly multi-head, masked) networks,
and the ValueState sub-state every learner holds for the value-network operators."""

from sparseq.stages.learners.losses import huber, iterated_td_losses, l2
from sparseq.stages.learners.options import LearnerOptions
from sparseq.stages.learners.q_learner import LearnerState, QLearner, QLearnerOptions
from sparseq.stages.learners.value_state import ValueState, value_state_of, with_value_state

__all__ = [
    "LearnerOptions",
    "LearnerState",
    "QLearner",
    "QLearnerOptions",
    "ValueState",
    "huber",
    "iterated_td_losses",
    "l2",
    "value_state_of",
    "with_value_state",
]
