"""Straight-line threefry on CPU.

JAX lowers the threefry hash behind every `jax.random` call, on CPU only, as a rolled
5-iteration `fori_loop` (smaller programs, quicker compiles). In sparseq's hot loop each
random call then becomes a while loop of its own, and XLA:CPU pays several microseconds
per loop: a `split` + `randint` of 128 draws measured 7.2 us rolled vs 1.6 us
straight-line, and about a dozen such calls run per environment step of DQN. The
straight-line lowering is the one JAX itself uses on GPU and TPU: the same hash, so
bit-identical random numbers; only the compiled program differs.
"""

import functools


@functools.cache
def use_straight_line_threefry_on_cpu() -> bool:
    """Registers JAX's straight-line threefry lowering for the CPU platform (affects
    programs compiled afterwards, in this process). Returns False, changing nothing,
    when this JAX lacks the internals it relies on."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
    except ImportError:
        return False
    prim = getattr(threefry2x32, "threefry2x32_p", None)
    rule = getattr(threefry2x32, "_threefry2x32_lowering_rule", None)
    if prim is None or rule is None:
        return False
    mlir.register_lowering(prim, rule, platform="cpu")
    return True
