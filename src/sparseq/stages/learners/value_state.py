"""The value-network sub-state every learner holds, and how operators find it.

One `ValueState` is a population of P online value networks (stacked: every array leaf
has a leading axis P) with what the operators act on: the target network (or None when
bootstrapping from the online networks), the optimizer state, the sparsity masks (or
None when dense), the per-member loss sums of the current target period, the acting
member and the gradient-step counter. The Q-learner's state IS a ValueState; a learner
with several parts (an actor-critic) holds one as a field, and an operator names that
field with its `on` option ("" = the learner's own value state). So target sync,
pruning selection, polynomial pruning and the head shift act on any learner unchanged.
"""

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array


class ValueState(eqx.Module):
    online: Any  # stacked network: every array leaf has a leading population axis P
    target: Any  # separate target network, or None when bootstrapping from online
    opt_state: Any  # stacked optax state of the online networks
    masks: Any  # stacked pytree like `online` (1 = kept, 0 = pruned), or None when dense
    loss_sums: Array  # (P,) float32: summed losses since the last target update
    acting_member: Array  # () int32: the member that acts (and that a sync copies)
    updates: Array  # () int32: gradient steps taken


def new_value_state(online: Any, optimizer: optax.GradientTransformation, *, target: bool, masked: bool) -> ValueState:
    """The value state of a freshly initialised stacked population `online`: a target
    network copied from member 0 when `target`, dense masks when `masked`, a fresh
    optimizer state per member, zero loss sums and counters."""
    from sparseq.stages.learners.population import population_size, select_member
    from sparseq.stages.sparsity import init_masks

    return ValueState(
        online=online,
        target=select_member(online, 0) if target else None,
        opt_state=jax.vmap(optimizer.init)(eqx.filter(online, eqx.is_array)),
        masks=init_masks(online) if masked else None,
        loss_sums=jnp.zeros((population_size(online),), jnp.float32),
        acting_member=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
    )


class HasValueStates(eqx.Module):
    """Base of learner states that hold value sub-states as fields; `default_value`
    names the one operators act on when their `on` option is empty."""

    default_value: ClassVar[str] = ""


def value_state_of(learner_state: Any, on: str = "") -> ValueState:
    """The value sub-state named `on` ("" = the learner's own); ValueError if none."""
    if not on and isinstance(learner_state, ValueState):
        return learner_state
    name = on or getattr(learner_state, "default_value", "")
    part = getattr(learner_state, name, None) if name else None
    if not isinstance(part, ValueState):
        where = f"field {name!r}" if name else "a value state"
        raise ValueError(f"the learner state {type(learner_state).__name__} has no {where} (ValueState)")
    return part


def with_value_state(learner_state: Any, value_state: ValueState, on: str = "") -> Any:
    """`learner_state` with its value sub-state `on` replaced."""
    if not on and isinstance(learner_state, ValueState):
        return value_state
    name = on or learner_state.default_value
    return eqx.tree_at(lambda s: getattr(s, name), learner_state, value_state, is_leaf=lambda x: x is None)


def has_value_state(learner_state: Any, on: str = "") -> bool:
    try:
        value_state_of(learner_state, on)
    except ValueError:
        return False
    return True


def value_states_of(learner_state: Any) -> dict[str, ValueState]:
    """Every value sub-state of a learner state by field name ("" for a state that is
    itself a ValueState): a SAC state gives {"critic": ..., "actor": ...}."""
    if isinstance(learner_state, ValueState):
        return {"": learner_state}
    fields = getattr(learner_state, "__dataclass_fields__", {})
    parts = {name: getattr(learner_state, name) for name in fields}
    return {name: part for name, part in parts.items() if isinstance(part, ValueState)}
