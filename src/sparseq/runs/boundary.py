"""Episode boundaries for exact resume.

envpool keeps its environments' state in C++, where it cannot be saved. So at every
checkpoint boundary, in a straight run and in a resumed run alike, sparseq ends every
running episode as a truncation (which bootstraps, like a time limit) and re-creates
the pool with a seed derived from (run seed, boundary index). A run resumed from the
checkpoint written at that boundary then sees exactly the streams the straight run
saw. The episodes cut at a boundary are not counted in the training returns.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.pipeline.compose import Pipeline, TrainState
from sparseq.types import Transition


def pool_seed(run_seed: int, boundary: int) -> int:
    """Seed of the environment pool after `boundary` boundaries (0: the run seed)."""
    if boundary == 0:
        return run_seed
    return int(np.random.SeedSequence([run_seed, boundary]).generate_state(1)[0] % (2**31 - 1))


@eqx.filter_jit
def _cut_streams(pipeline: Pipeline, state: TrainState):
    """Marks the last written step of every stream as truncated (unless it already
    ended or is an auto-reset step) and writes the final observation as an auto-reset
    entry, so every stored transition keeps its next observation."""
    replay, rs = pipeline.replay, state.replay
    last = (rs.count - 1) % replay.slots
    cut = ~rs.is_reset_step[last] & ~rs.terminated[last]
    rs = eqx.tree_at(lambda r: r.truncated, rs, rs.truncated.at[last].set(rs.truncated[last] | cut))
    n = pipeline.collector.num_envs
    final = Transition(
        obs=state.collector.obs,
        action=jnp.zeros((n,), jnp.int32),
        reward=jnp.zeros((n,), jnp.float32),
        terminated=jnp.zeros((n,), bool),
        truncated=jnp.zeros((n,), bool),
        is_reset_step=jnp.ones((n,), bool),
    )
    return replay.add(rs, final)


def cross_boundary(pipeline: Pipeline, state: TrainState, seed: int) -> tuple[Pipeline, TrainState]:
    """Ends all episodes and re-creates the environment pool with `seed`.

    Returns the pipeline with its new collector (the old pool is closed) and the state
    with the new pool's first observations.
    """
    replay_state = _cut_streams(pipeline, state) if int(state.replay.count) > 0 else state.replay
    old = pipeline.collector
    collector = old.with_seed(seed)
    old.close()
    pipeline = eqx.tree_at(lambda p: p.collector, pipeline, collector)
    state = eqx.tree_at(lambda s: (s.collector, s.replay), state, (collector.init(), replay_state))
    return pipeline, jax.block_until_ready(state)
