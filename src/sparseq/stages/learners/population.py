"""Helpers for populations of networks stored as one stacked pytree (leading axis P)."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array


def stack_members(make: Callable[[Array], Any], keys: Array) -> Any:
    """Builds P modules from keys (P, 2) and stacks their array leaves."""
    return eqx.filter_vmap(make)(keys)


def select_member(stacked: Any, index: Array | int) -> Any:
    """Member `index` of a stacked pytree (array leaves indexed on axis 0)."""
    return jax.tree.map(lambda x: x[index] if eqx.is_array(x) else x, stacked)


def replace_member(stacked: Any, index: Array | int, member: Any) -> Any:
    """Returns `stacked` with member `index` replaced by `member`."""
    return jax.tree.map(
        lambda xs, x: xs.at[index].set(x) if eqx.is_array(xs) else xs,
        stacked,
        member,
    )


def gather_members(stacked: Any, indices: Array) -> Any:
    """Members `indices` (P',) of a stacked pytree, stacked again."""
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0) if eqx.is_array(x) else x, stacked)


def population_size(stacked: Any) -> int:
    return jax.tree.leaves(eqx.filter(stacked, eqx.is_array))[0].shape[0]
