"""Collectors: step envpool environments and return replay-ready transitions."""

from sparseq.stages.collect.envpool_collector import CollectorState, EnvpoolCollector
from sparseq.stages.collect.tasks import UnknownTaskError, is_atari_task, known_task_ids

__all__ = [
    "CollectorState",
    "EnvpoolCollector",
    "UnknownTaskError",
    "is_atari_task",
    "known_task_ids",
]
