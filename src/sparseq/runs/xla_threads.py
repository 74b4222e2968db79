"""XLA:CPU's Eigen thread pool, off by default for the command line.

The pipelines' matrix products are small (an MLP on a batch of 32, one observation to
act on), and handing them to Eigen's pool costs more than it saves; on a 2-core
machine the pool's threads also take the core envpool's worker needs to step the
environments while the gradient step runs (`learner.overlap`). Measured side by side
(docs/stack-notes.md), the flag makes every MLP loop faster and leaves the Nature CNN's
update as it was (its convolutions do not go through Eigen's pool).

SPARSEQ_EIGEN_THREADS=on keeps the pool. An `xla_cpu_multi_thread_eigen` already in
XLA_FLAGS is left as it is. XLA reads the flags when JAX's CPU backend starts: call
this before the first computation.
"""

import os

ENV_VAR = "SPARSEQ_EIGEN_THREADS"
FLAG = "--xla_cpu_multi_thread_eigen"


def single_threaded_eigen() -> bool:
    """Adds `--xla_cpu_multi_thread_eigen=false` to XLA_FLAGS unless told otherwise;
    returns whether the pool is off by this call."""
    if os.environ.get(ENV_VAR, "").strip().lower() in ("on", "1", "true", "yes"):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=false".strip()
    return True
