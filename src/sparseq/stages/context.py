"""What a stage may know about the pipeline it is built into (pipeline files build
stages through `Stage.from_options(options, context)`)."""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """Attributes:
    obs_shape, obs_dtype: one observation of the collector.
    num_actions: A of a discrete action space (0 for a continuous one).
    action_shape: () for discrete actions, (A,) for continuous ones.
    action_low, action_high: bounds of a continuous action space (empty for discrete).
    task_id: the collector's task (for error messages).
    total_steps: environment steps of the run (fractions of training resolve to steps).
    sections: the pipeline file's other sections by name ("network", "env", ...).
    learner: the built learner (for operators; None while the learner is built).
    """

    obs_shape: tuple[int, ...]
    obs_dtype: Any
    num_actions: int
    total_steps: int
    sections: dict[str, Any] = dataclasses.field(default_factory=dict)
    learner: Any = None
    action_shape: tuple[int, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    task_id: str = ""

    @property
    def continuous(self) -> bool:
        return len(self.action_shape) > 0
