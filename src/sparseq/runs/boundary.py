"""Episode boundaries for exact resume.

envpool keeps its environments' state in C++, where it cannot be saved. So at every
checkpoint boundary, in a straight run and in a resumed run alike, sparseq ends every
running episode as a truncation (which bootstraps, like a time limit) and re-creates
the pool with a seed derived from (run seed, boundary index). A run resumed from the
checkpoint written at that boundary then sees exactly the streams the straight run
saw. The episodes cut at a boundary are not counted in the training returns.

A run stopped by a signal between boundaries adds no boundary (that would change the
run): its checkpoint keeps the actions taken since the last boundary, and the resumed
run steps a fresh pool with that boundary's seed through them (`replay_actions`),
which brings every environment back to where it was, as envpool is deterministic
given its seed and actions.
"""

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.pipeline.compose import Pipeline, TrainState
from sparseq.pipeline.seed_pack import pool_env_seeds
from sparseq.stages.compile_once import filter_jit_once
from sparseq.types import Transition


def derived_seed(run_seed: int, tag: int) -> int:
    """A seed in [0, 2^31 - 1) of its own stream for (run seed, tag): pool boundaries,
    evaluation pools and analyses each draw from one, away from the training keys."""
    return int(np.random.SeedSequence([run_seed, tag]).generate_state(1)[0] % (2**31 - 1))


def pool_seed(run_seed: int, boundary: int) -> int:
    """Seed of the environment pool after `boundary` boundaries (0: the run seed)."""
    if boundary == 0:
        return run_seed
    return derived_seed(run_seed, boundary)


def boundary_pool_seed(config: Any, boundary: int) -> int | tuple[int, ...]:
    """The pool's seed after `boundary` boundaries; for a pack of seeds (run.seeds), one
    per environment: each seed's environments seeded as its single run's pool."""
    if config.run.seeds:
        return pool_env_seeds(config.run.seeds, config.env.num_envs, lambda seed: pool_seed(seed, boundary))
    return pool_seed(config.run.seed, boundary)


@filter_jit_once(donate="all-except-first")
def _cut_streams(pipeline: Any, rs: eqx.Module, obs: jax.Array):
    """`_cut` of a pipeline, or of every seed of a pack (rs with a seed axis, obs (P, ...))."""
    if pipeline.seeds is None:
        return _cut(pipeline, rs, obs)
    return eqx.filter_vmap(lambda r, o: _cut(pipeline.member, r, o))(rs, pipeline.split(obs))


def _cut(pipeline: Pipeline, rs: eqx.Module, obs: jax.Array):
    """Marks the last written step of every stream as truncated (unless it already
    ended or is an auto-reset step) and writes the final observation `obs` (N, ...) as
    an auto-reset entry, so every stored transition keeps its next observation. The
    replay state is donated (updated in place: a copy of a multi-GB replay would
    double the run's memory at every boundary)."""
    replay = pipeline.replay
    last = (rs.count - 1) % replay.slots
    cut = ~rs.is_reset_step[last] & ~rs.terminated[last]
    rs = eqx.tree_at(lambda r: r.truncated, rs, rs.truncated.at[last].set(rs.truncated[last] | cut))
    n = pipeline.collector.num_envs
    final = Transition(
        obs=obs,
        action=jnp.zeros((n, *replay.action_shape), replay.action_dtype),
        reward=jnp.zeros((n,), jnp.float32),
        terminated=jnp.zeros((n,), bool),
        truncated=jnp.zeros((n,), bool),
        is_reset_step=jnp.ones((n,), bool),
    )
    return replay.add(rs, final)


def cross_boundary(pipeline: Any, state: TrainState, seed: int | tuple[int, ...]) -> tuple[Any, TrainState]:
    """Ends all episodes and re-creates the environment pool with `seed`.

    Returns the pipeline with its new collector (the old pool is closed) and the state
    with the new pool's first observations. A pipeline without a pool (offline) is
    returned as it is.
    """
    if pipeline.collector is None:
        return pipeline, state
    if int(np.max(state.replay.count)) > 0:
        # A copy of the (small) observations: every argument after the pipeline is donated.
        replay_state = _cut_streams(pipeline, state.replay, jnp.copy(state.collector.obs))
    else:
        replay_state = state.replay
    old = pipeline.collector
    collector = old.with_seed(seed)
    old.close()
    pipeline = eqx.tree_at(lambda p: p.collector, pipeline, collector)
    state = eqx.tree_at(lambda s: (s.collector, s.replay), state, (collector.init(), replay_state))
    return pipeline, jax.block_until_ready(state)


@eqx.filter_jit
def _step_through(collector, collector_state, actions: jax.Array):
    """Steps the pool through actions (T, N); returns the last collector state."""

    def body(state, step_actions):
        state, _, _ = collector.step(state, step_actions)
        return state, None

    return jax.lax.scan(body, collector_state, actions)[0]


def replay_actions(collector, fresh: eqx.Module, saved: eqx.Module, actions: np.ndarray) -> eqx.Module:
    """Brings a freshly reset pool to a stopped run's position.

    collector: the pool re-created with the seed of the stopped run's last boundary.
    fresh: its state right after its one reset (`collector.init()`, done once).
    saved: the collector state in the checkpoint (observations, episode counters).
    actions: (T, N), every action taken since that boundary.
    Returns `saved` with the new pool's handle. When the observations reached differ
    from the saved ones (a non-deterministic environment) it warns: the run goes on,
    but not exactly as the straight run would.
    """
    state = fresh
    if len(actions):
        state = _step_through(collector, state, jnp.asarray(actions))
    if not bool(jnp.array_equal(state.obs, saved.obs)):
        warnings.warn(
            "the environments did not come back to the stopped run's observations "
            "(non-deterministic environment?): the resumed run is not exact",
            stacklevel=2,
        )
    return eqx.tree_at(lambda s: s.handle, saved, state.handle)
