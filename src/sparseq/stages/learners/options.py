"""Options every learner has: the pipeline reads them to schedule the gradient steps
and the replay to form n-step returns. A learner's own options dataclass extends it."""

from dataclasses import dataclass
from typing import Literal

from sparseq.stages.options import Rule, StageOptions


@dataclass(frozen=True)
class LearnerOptions(StageOptions):
    gamma: float = 0.99
    n_step: int = 1
    update_every: int = 1
    """Environment steps per gradient step."""
    warmup: int = 1_000
    """Environment steps before the first gradient step."""
    overlap: bool = False
    """A cycle's gradient steps sample the replay as it was before the cycle's
    environment steps (which act, as always, with the previous update's parameters), so
    the two are independent: envpool's worker steps the environments while the
    gradient step runs. A (small) change of the algorithm, off by default: 5 seeds
    neither show nor rule out an effect on learning (README)."""

    def rules(self) -> list[Rule]:
        return [
            ("gamma", 0 <= self.gamma <= 1, "must be in [0, 1]"),
            ("n_step", self.n_step >= 1, "must be >= 1"),
            ("update_every", self.update_every >= 1, "must be >= 1"),
            ("warmup", self.warmup >= 0, "must be >= 0"),
        ]


@dataclass(frozen=True)
class OptimizerOptions(LearnerOptions):
    """The optimizer knobs of learners that take gradient steps (sparseq.stages.
    learners.optimizers builds the optax transformation from them)."""

    optimizer: Literal["adam", "adamw", "rmsprop", "sgd"] = "adam"
    """optax's adam, adamw, rmsprop (decay 0.9, not centered) or sgd (no momentum)."""
    learning_rate: float = 3e-4
    """The (initial, with a schedule) learning rate."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """linear / cosine: from learning_rate to lr_end over the run's gradient steps,
    (run.total_steps - warmup) // update_every."""
    lr_end: float = 0.0
    """The learning rate of the last gradient step with lr_schedule linear or cosine."""
    adam_eps: float = 1e-8
    """eps of adam, adamw and rmsprop."""
    adam_b1: float = 0.9
    """beta1 of adam and adamw (CrossQ uses 0.5)."""
    weight_decay: float = 0.0
    """Decoupled weight decay of adamw."""
    max_grad_norm: float = 0.0
    """Clip each member's gradient to this global norm before the optimizer (0 = off)."""

    def rules(self) -> list[Rule]:
        return [
            *super().rules(),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("lr_end", self.lr_end >= 0, "must be >= 0"),
            ("lr_end", self.lr_end == 0 or self.lr_schedule != "constant", "needs lr_schedule 'linear' or 'cosine'"),
            ("adam_eps", self.adam_eps > 0, "must be > 0"),
            ("adam_b1", 0 <= self.adam_b1 < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("weight_decay", self.weight_decay == 0 or self.optimizer == "adamw", "needs optimizer 'adamw'"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0 (0 = no clipping)"),
        ]
