"""The optax transformation a Q-learner applies to each member, from its options.

`optimizer` picks adam / adamw / rmsprop / sgd (`adam_eps` is the eps of the first
three, `weight_decay` only acts with adamw), `lr_schedule` lays the learning rate out
over the run's gradient steps (constant, or linear / cosine from `learning_rate` to
`lr_end`), and `max_grad_norm` > 0 clips each member's gradient by its global norm
before the optimizer sees it. The defaults build exactly `optax.adam(lr, eps=adam_eps)`.
"""

import dataclasses
from typing import Any

import optax

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "linear", "cosine")


def total_updates(total_steps: int, warmup: int, update_every: int) -> int:
    """Gradient steps of a run of `total_steps` environment steps (at least 1)."""
    return max(1, (total_steps - warmup) // update_every)


def learning_rate(options: Any, total_updates: int) -> float | optax.Schedule:
    """The learning rate: a float when constant, else an optax schedule of the update
    count that starts at `learning_rate` and reaches `lr_end` at the last update
    (count total_updates - 1; optax counts the updates already taken)."""
    if options.lr_schedule == "constant":
        return options.learning_rate
    last = max(1, total_updates - 1)
    if options.lr_schedule == "linear":
        return optax.linear_schedule(options.learning_rate, options.lr_end, last)
    if options.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(options.learning_rate, last, alpha=options.lr_end / options.learning_rate)
    raise ValueError(f"unknown lr_schedule {options.lr_schedule!r} (known: {', '.join(LR_SCHEDULES)})")


def make_optimizer(options: Any, total_updates: int, lr: float | None = None) -> optax.GradientTransformation:
    """The optimizer of a learner's options (OptimizerOptions) for a run of
    `total_updates` gradient steps (the schedule's length); `lr` replaces
    options.learning_rate (an actor's or temperature's own rate)."""
    if lr is not None and lr > 0:
        options = dataclasses.replace(options, learning_rate=lr)
    lr = learning_rate(options, total_updates)
    if options.optimizer == "adam":
        optimizer = optax.adam(lr, b1=options.adam_b1, eps=options.adam_eps)
    elif options.optimizer == "adamw":
        optimizer = optax.adamw(lr, b1=options.adam_b1, eps=options.adam_eps, weight_decay=options.weight_decay)
    elif options.optimizer == "rmsprop":
        optimizer = optax.rmsprop(lr, eps=options.adam_eps)
    elif options.optimizer == "sgd":
        optimizer = optax.sgd(lr)
    else:
        raise ValueError(f"unknown optimizer {options.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
    if options.max_grad_norm > 0:
        optimizer = optax.chain(optax.clip_by_global_norm(options.max_grad_norm), optimizer)
    return optimizer
