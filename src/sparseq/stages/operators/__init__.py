"""Operators: periodic transformations of a learner's value sub-state (target sync,
soft target update, head shift, pruning), composable like an optax chain. Each declares
the roles it plays (`owns`) and what must run after it (`precedes`); its options
dataclass sits next to it."""

from sparseq.stages.operators.base import Operator, ValueOperator, ValueOperatorOptions, period_crossed
from sparseq.stages.operators.poly_prune import PolyPrune, PolyPruneOptions
from sparseq.stages.operators.polyak import Polyak, PolyakOptions
from sparseq.stages.operators.prune_select import PruneSelect, PruneSelectOptions
from sparseq.stages.operators.shared_target_shift import SharedTargetShift, SharedTargetShiftOptions
from sparseq.stages.operators.target_sync import TargetSync, TargetSyncOptions

__all__ = [
    "Operator",
    "PolyPrune",
    "PolyPruneOptions",
    "Polyak",
    "PolyakOptions",
    "PruneSelect",
    "PruneSelectOptions",
    "SharedTargetShift",
    "SharedTargetShiftOptions",
    "TargetSync",
    "TargetSyncOptions",
    "ValueOperator",
    "ValueOperatorOptions",
    "period_crossed",
]
