"""Learners: a Q-learner over a population of (possibly multi-head, masked) networks."""

from sparseq.stages.learners.losses import huber, iterated_td_losses, l2
from sparseq.stages.learners.q_learner import LearnerState, QLearner

__all__ = ["LearnerState", "QLearner", "huber", "iterated_td_losses", "l2"]
