"""What a stage may know about the pipeline it is built into (pipeline files build
stages through `Stage.from_options(options, context)`)."""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """Attributes:
    obs_shape, obs_dtype: one observation of the collector.
    num_actions: A of a discrete action space.
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
