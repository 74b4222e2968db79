"""Learners: a Q-learner over a population of (possibly multi-head, masked) networks."""

from sparseq.learners.losses import huber, iterated_td_losses, l2
from sparseq.learners.q_learner import LearnerState, QLearner

__all__ = ["LearnerState", "QLearner", "huber", "iterated_td_losses", "l2"]
