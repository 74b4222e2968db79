"""Options every learner has: the pipeline reads them to schedule the gradient steps
and the replay to form n-step returns. A learner's own options dataclass extends it."""

from dataclasses import dataclass

from sparseq.stages.options import Rule, StageOptions


@dataclass(frozen=True)
class LearnerOptions(StageOptions):
    gamma: float = 0.99
    n_step: int = 1
    update_every: int = 1
    """Environment steps per gradient step."""
    warmup: int = 1_000
    """Environment steps before the first gradient step."""

    def rules(self) -> list[Rule]:
        return [
            ("gamma", 0 <= self.gamma <= 1, "must be in [0, 1]"),
            ("n_step", self.n_step >= 1, "must be >= 1"),
            ("update_every", self.update_every >= 1, "must be >= 1"),
            ("warmup", self.warmup >= 0, "must be >= 0"),
        ]
