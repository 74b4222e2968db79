"""Operators: periodic transformations of the learner state (target sync, head
shift, pruning), composable like an optax chain."""

from sparseq.operators.base import Operator, period_crossed
from sparseq.operators.target_sync import TargetSync

__all__ = ["Operator", "TargetSync", "period_crossed"]
