"""Collectors: step envpool environments and return replay-ready transitions."""

from sparseq.stages.collect.lazy_envpool import defer_envpool_renderers

defer_envpool_renderers()  # before anything imports envpool

from sparseq.stages.collect.envpool_collector import CollectorState, EnvpoolCollector  # noqa: E402
from sparseq.stages.collect.tasks import UnknownTaskError, is_atari_task, known_task_ids  # noqa: E402

__all__ = [
    "CollectorState",
    "EnvpoolCollector",
    "UnknownTaskError",
    "is_atari_task",
    "known_task_ids",
]
