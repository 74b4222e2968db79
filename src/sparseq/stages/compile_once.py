"""`filter_jit_once`: eqx.filter_jit for programs a run calls once or a few times (the
learning state's init, the pool's first state, a boundary's cut, a finiteness check).

They compile with LLVM's optimisations off (`xla_backend_optimization_level=0`): on
XLA:CPU about 5x shorter compiles (a learner's init measured 2.2 s -> 0.4 s), and a call
or two is too few for slower code to matter. The training loop keeps the default: at
level 0 it ran 2.3x slower. At level 0 a pack's vmapped init gives each seed the weights
of its single run bit for bit; optimised (or eager against compiled) they differed in
the last bit.
"""

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
from jax._src.core import trace_state_clean  # no public way to ask if a trace is on

ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def filter_jit_once(fun: Callable | None = None, **jitkwargs: Any) -> Any:
    """`eqx.filter_jit(fun, **jitkwargs)` compiled without LLVM optimisations; usable as
    `@filter_jit_once` or `@filter_jit_once(donate=...)`."""
    if fun is None:
        return functools.partial(filter_jit_once, **jitkwargs)
    once = eqx.filter_jit(fun, compiler_options=ONCE_COMPILER_OPTIONS, **jitkwargs)
    nested = eqx.filter_jit(fun, **jitkwargs)  # inside a trace, options are the outer program's

    @functools.wraps(fun)
    def call(*args: Any, **kwargs: Any) -> Any:
        return (once if trace_state_clean() else nested)(*args, **kwargs)

    return call
