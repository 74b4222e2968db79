"""XLA:CPU's Eigen thread pool, off by default for the command line.

The pipelines' matrix products are small (an MLP on a batch of 32, one observation to
act on), and handing them to Eigen's pool costs more than it saves; on a 2-core
machine the pool's threads also take the core envpool's worker needs to step the
environments while the gradient step runs (`learner.overlap`). Measured side by side
(docs/stack-notes.md), the flag makes every MLP loop faster and leaves the Nature CNN's
update as it was (its convolutions do not go through Eigen's pool).

With `learner.overlap`, XLA:CPU's intra-op pool (the threads that run a program's
independent thunks side by side) also shrinks to one thread, NPROC=1, which
`xla::DefaultThreadPoolSize` reads: with the default two on a 2-core machine, the
pool's threads and envpool's worker contend for the cores and the overlap gains ~3%;
with one, the worker has a core of its own (docs/stack-notes.md). Without the overlap
the pool stays as it is: multi-network updates (iS-DQN, EauDeQN, SAC's critics) run
their networks side by side on it.

SPARSEQ_EIGEN_THREADS=on keeps both pools. An `xla_cpu_multi_thread_eigen` already in
XLA_FLAGS, or an NPROC already set, is left as it is. XLA reads both when JAX's CPU
backend starts: call these before the first computation.
"""

import os

ENV_VAR = "SPARSEQ_EIGEN_THREADS"
FLAG = "--xla_cpu_multi_thread_eigen"
POOL_SIZE_VAR = "NPROC"


def _keep_pools() -> bool:
    return os.environ.get(ENV_VAR, "").strip().lower() in ("on", "1", "true", "yes")


def single_threaded_eigen() -> bool:
    """Adds `--xla_cpu_multi_thread_eigen=false` to XLA_FLAGS unless told otherwise;
    returns whether the pool is off by this call."""
    if _keep_pools():
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=false".strip()
    return True


def one_intra_op_thread_for_overlap(overlap: bool) -> bool:
    """Sets NPROC=1 (XLA:CPU's intra-op pool of one thread) for a run with
    `learner.overlap`, unless NPROC is set, SPARSEQ_EIGEN_THREADS=on, or JAX's backend
    has already started (too late to take effect); returns whether it set it."""
    if not overlap or _keep_pools() or POOL_SIZE_VAR in os.environ or _backend_started():
        return False
    os.environ[POOL_SIZE_VAR] = "1"
    return True


def _backend_started() -> bool:
    from jax._src import xla_bridge

    return bool(xla_bridge._backends)
