"""Operators: periodic transformations of the learner state (target sync, head
shift, pruning), composable like an optax chain."""

from sparseq.operators.base import Operator, period_crossed
from sparseq.operators.poly_prune import PolyPrune
from sparseq.operators.prune_select import PruneSelect
from sparseq.operators.shared_target_shift import SharedTargetShift
from sparseq.operators.target_sync import TargetSync

__all__ = ["Operator", "PolyPrune", "PruneSelect", "SharedTargetShift", "TargetSync", "period_crossed"]
