"""S independent seeds of one pipeline, trained in lockstep on ONE environment pool.

envpool's XLA step cannot be vmapped, so the S x N environments live in one pool
whose environment i of seed k is seeded like environment i of a single-seed run of
seed k (envpool takes one seed per environment); everything else (learner, replay,
operators, step counter, key) carries a leading seed axis and goes through the
member pipeline's own pure functions under `vmap`. A seed of a pack and a separate
run with that seed therefore draw the same random numbers and see the same
environment streams.

Shapes: S seeds, N environments per seed, P = S * N environments in the pool.
"""

import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from sparseq.pipeline.compose import OVERLAP_KEY_TAG, Pipeline, Sent, TrainState, run_cycle
from sparseq.stages.compile_once import filter_jit_once


class PoolShare(eqx.Module):
    """One seed's share of a pack's pool: what the member pipeline's stages are built
    from (shapes, action space, N), without a pool of its own. The pack steps the pool."""

    pool: Any = eqx.field(static=True)
    num_envs: int = eqx.field(static=True)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("init", "step", "with_seed", "close"):
            raise AttributeError(f"{name}: a seed's share of a pool is stepped by its SeedPack")
        return getattr(self.pool, name)


def _without_pool(state: TrainState) -> TrainState:
    return dataclasses.replace(state, collector=None)


class SeedPack(eqx.Module):
    """Attributes:
    member: one seed's pipeline (its collector a `PoolShare`); every seed runs it.
    collector: the pool of S x N environments.
    seeds: the run seeds, in the order of the state's seed axis.
    """

    member: Pipeline
    collector: Any
    seeds: tuple[int, ...] = eqx.field(static=True)

    step_unit: ClassVar[str] = "env_steps"
    saves_replay: ClassVar[bool] = True

    # -- what the runner reads: the member's -----------------------------------
    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    @property
    def replay(self) -> Any:
        return self.member.replay

    @property
    def learner(self) -> Any:
        return self.member.learner

    @property
    def data_spec(self) -> Any:
        return self.member.data_spec

    @property
    def steps_per_cycle(self) -> int:
        """Environment steps of one seed per cycle (every seed takes as many)."""
        return self.member.steps_per_cycle

    @property
    def collects_per_cycle(self) -> int:
        return self.member.collects_per_cycle

    @property
    def updates_per_cycle(self) -> int:
        return self.member.updates_per_cycle

    @property
    def learning_starts(self) -> int:
        return self.member.learning_starts

    @property
    def overlap(self) -> bool:
        return self.member.overlap

    def learns_in_cycle(self, cycle: int) -> bool:
        return self.member.learns_in_cycle(cycle)

    # -- seed axis <-> pool order ---------------------------------------------
    def split(self, x: Array) -> Array:
        """(P, ...) in pool order -> (S, N, ...)."""
        return x.reshape(self.num_seeds, -1, *x.shape[1:])

    @staticmethod
    def join(x: Array) -> Array:
        """(S, N, ...) -> (P, ...) in pool order."""
        return x.reshape(-1, *x.shape[2:])

    def pool_actions(self, actions: Array) -> Array:
        """The runner's actions (cycles, S, steps_per_cycle, ...) in the pool's order
        (cycles x collects, P, ...)."""
        cycles, s, n = actions.shape[0], self.num_seeds, self.member.collector.num_envs
        rest = actions.shape[3:]
        by_seed = actions.reshape(cycles, s, self.collects_per_cycle, n, *rest)
        return np.moveaxis(np.asarray(by_seed), 1, 2).reshape(-1, s * n, *rest)

    # -- the pure functions of the loop -----------------------------------------
    def init(self, keys: Array) -> TrainState:
        """keys: (S,) one key per seed, as its single-seed run makes it (host side:
        resets the pool)."""
        seeds = filter_jit_once(eqx.filter_vmap(self.member.init_learning))(keys)
        return dataclasses.replace(seeds, collector=self.collector.init())

    def collect(self, state: TrainState, _: Any = None) -> tuple[TrainState, dict[str, Array]]:
        """One iteration: every seed acts on its N observations, the pool steps all P."""
        return self.receive(*self.send(state))

    def send(self, state: TrainState) -> tuple[TrainState, Sent]:
        """Every seed acts; the pool gets all P actions (`Pipeline.send`)."""
        actions, keys, metrics = eqx.filter_vmap(self.member.choose_actions)(
            _without_pool(state), self.split(state.collector.obs)
        )
        pool_state = self.collector.send(state.collector, self.join(actions))
        return dataclasses.replace(state, collector=pool_state), Sent(actions, keys, metrics)

    def receive(self, state: TrainState, sent: Sent) -> tuple[TrainState, dict[str, Array]]:
        """The pool's step into every seed's replay (`Pipeline.receive`)."""
        pool_state, transition, episodes = self.collector.receive(state.collector, self.join(sent.actions))
        transition, episodes = jax.tree.map(self.split, (transition, episodes))
        seeds = eqx.filter_vmap(self.member.store)(_without_pool(state), transition, sent.key)
        return dataclasses.replace(seeds, collector=pool_state), {
            **sent.metrics,
            **self.member.episode_metrics(sent.actions, episodes),
        }

    def _learning(self, state: TrainState) -> tuple[Any, Array, dict[str, Array]]:
        return eqx.filter_vmap(self.member._learning)(_without_pool(state))

    def _warming_up(self, state: TrainState) -> tuple[Any, Array, dict[str, Array]]:
        return eqx.filter_vmap(self.member._warming_up)(_without_pool(state))

    def learn_metric_shapes(self, state: TrainState) -> dict[str, jax.ShapeDtypeStruct]:
        return jax.eval_shape(self._learning, state)[2]

    def apply_operators(self, state: TrainState, steps_before: Array) -> tuple[TrainState, dict[str, Array]]:
        seeds, metrics = eqx.filter_vmap(self.member.apply_operators)(_without_pool(state), steps_before)
        return dataclasses.replace(seeds, collector=state.collector), metrics

    def overlap_source(self, before: TrainState) -> TrainState:
        keys = jax.vmap(lambda k: jax.random.fold_in(k, OVERLAP_KEY_TAG))(before.key)
        return eqx.tree_at(lambda s: s.key, before, keys)

    @staticmethod
    def flatten_collected(collected: dict[str, Array]) -> dict[str, Array]:
        """(collects, S, N, ...) -> (S, steps_per_cycle, ...); (collects, S) -> (S, collects)."""
        by_seed = {k: jnp.moveaxis(v, 1, 0) for k, v in collected.items()}
        return {k: v.reshape(v.shape[0], -1, *v.shape[3:]) if v.ndim >= 3 else v for k, v in by_seed.items()}

    def per_seed(self, value: Array) -> Array:
        return jnp.broadcast_to(value, (self.num_seeds, *jnp.shape(value)))

    def cycle(self, state: TrainState, learn: Any, unroll_collect: bool = False) -> tuple[TrainState, dict[str, Array]]:
        """`Pipeline.cycle` for every seed at once; every metric gets a leading seed axis."""
        return run_cycle(self, state, learn, unroll_collect)

    def step(self, state: TrainState, _: Any = None) -> tuple[TrainState, dict[str, Array]]:
        """One cycle of every seed (their step counters are equal), learning once
        `learning_starts` is reached."""
        return self.cycle(state, state.env_steps[0] + self.steps_per_cycle >= self.learning_starts)


def take_seed(tree: Any, index: int) -> Any:
    """Seed `index`'s slice of a pack's pytree with a leading seed axis (host side)."""
    return jax.tree.map(lambda x: x[index] if eqx.is_array(x) or isinstance(x, np.ndarray) else x, tree)


def pool_env_seeds(seeds: tuple[int, ...], num_envs: int, seed_of: Any) -> tuple[int, ...]:
    """Per-environment seeds of a pack's pool: environment i of seed k gets
    `seed_of(k) + i`, as envpool seeds environment i of a pool seeded `seed_of(k)`."""
    return tuple(int(seed_of(s)) + i for s in seeds for i in range(num_envs))
