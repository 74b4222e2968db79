"""Operators: periodic transformations of the learner state (target sync, head
shift, pruning), composable like an optax chain."""

from sparseq.stages.operators.base import Operator, period_crossed
from sparseq.stages.operators.poly_prune import PolyPrune
from sparseq.stages.operators.prune_select import PruneSelect
from sparseq.stages.operators.shared_target_shift import SharedTargetShift
from sparseq.stages.operators.target_sync import TargetSync

__all__ = ["Operator", "PolyPrune", "PruneSelect", "SharedTargetShift", "TargetSync", "period_crossed"]
