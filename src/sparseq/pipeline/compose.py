"""Composes the stages into `init(key) -> TrainState` and a pure `step(state)`.

One iteration steps all N environments once, writes the N transitions, takes the
gradient steps that fall due (one every `update_every` environment steps, after
`warmup` steps), and lets every operator look at the step counters.
"""

import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from sparseq.pipeline.prng import use_straight_line_threefry_on_cpu
from sparseq.pipeline.protocols import Collector, Learner, Operator, Replay
from sparseq.stages.compile_once import filter_jit_once
from sparseq.stages.schedules import linear_epsilon
from sparseq.types import EpisodeStats, Transition

# Every pipeline program is compiled after this import; the random numbers are the
# same, each random call on CPU just stops being a loop of its own (see sparseq.pipeline.prng).
use_straight_line_threefry_on_cpu()


class TrainState(eqx.Module):
    collector: Any
    replay: Any
    learner: Any
    operators: tuple[Any, ...]
    env_steps: Array  # () int32: environment steps taken (all environments)
    key: Array


class Exploration(eqx.Module):
    """Linear epsilon-greedy schedule (Dopamine's): `start` during warm-up, then linear
    to `end` over `decay_steps` environment steps.

    member_*: the same kind of schedule for eps_b, the probability of acting with a
    uniformly drawn online network of a population instead of the selected one
    (EauDeQN's option, from Adaptive Q-Network); off when both ends are 0.
    """

    start: float = eqx.field(static=True, default=1.0)
    end: float = eqx.field(static=True, default=0.01)
    decay_steps: int = eqx.field(static=True, default=1_000)
    member_start: float = eqx.field(static=True, default=0.0)
    member_end: float = eqx.field(static=True, default=0.0)
    member_decay_steps: int = eqx.field(static=True, default=100_000)

    def epsilon(self, env_steps: Array, warmup: int) -> Array:
        return linear_epsilon(env_steps, start=self.start, end=self.end, decay_steps=self.decay_steps, warmup=warmup)

    @property
    def explores_members(self) -> bool:
        return self.member_start > 0 or self.member_end > 0

    def member_epsilon(self, env_steps: Array, warmup: int) -> Array:
        return linear_epsilon(
            env_steps,
            start=self.member_start,
            end=self.member_end,
            decay_steps=self.member_decay_steps,
            warmup=warmup,
        )


class Sent(eqx.Module):
    """What `Pipeline.send` hands to `Pipeline.receive`: the actions in flight, the
    state's next key and the exploration metrics."""

    actions: Array
    key: Array
    metrics: dict[str, Array]


OVERLAP_KEY_TAG = 0x0FE71A9  # folds the learning key out of the cycle's first key (overlap)


class Pipeline(eqx.Module):
    """Attributes:
    collector, replay, learner: the stages (any objects with the methods of
        sparseq.pipeline.protocols).
    operators: applied in order after the learner at every iteration.
    exploration: the epsilon schedule.
    warmup: environment steps before the first gradient step.
    update_every: environment steps per gradient step; it must divide N or be a
        multiple of N (N = collector.num_envs).
    overlap: the gradient steps read the state from before the cycle's environment
        steps (replay and key), so the two have no data dependency.
    """

    collector: Collector
    replay: Replay
    learner: Learner
    operators: tuple[Operator, ...] = ()
    exploration: Exploration = Exploration()
    warmup: int = eqx.field(static=True, default=1_000)
    update_every: int = eqx.field(static=True, default=1)
    overlap: bool = eqx.field(static=True, default=False)

    step_unit: ClassVar[str] = "env_steps"
    """What the run's step counter (`TrainState.env_steps`) counts: metrics.jsonl's x axis."""
    saves_replay: ClassVar[bool] = True  # checkpoints hold the replay (it is not on disk elsewhere)

    @property
    def data_spec(self) -> Collector:
        """Where observations and actions come from (shapes, bounds): the collector."""
        return self.collector

    def __check_init__(self):
        n, u = self.collector.num_envs, self.update_every
        if n % u and u % n:
            raise ValueError(f"update_every={u} must divide num_envs={n} or be a multiple of it")

    def init(self, key: Array) -> TrainState:
        """Builds the initial state (host side: resets the environments)."""
        return dataclasses.replace(filter_jit_once(self.init_learning)(key), collector=self.collector.init())

    def init_learning(self, key: Array) -> TrainState:
        """The initial state without the pool's (`collector` None): pure, so a pack of
        seeds maps it over their keys."""
        learner_key, key = jax.random.split(key)
        learner_state = self.learner.init(learner_key)
        return TrainState(
            collector=None,
            replay=self.replay.init(self.collector.obs_shape, self.collector.obs_dtype),
            learner=learner_state,
            operators=tuple(op.init(learner_state) for op in self.operators),
            env_steps=jnp.zeros((), jnp.int32),
            key=key,
        )

    @property
    def collects_per_cycle(self) -> int:
        """Iterations (N environment steps each) in one update cycle."""
        return max(self.update_every // self.collector.num_envs, 1)

    @property
    def updates_per_cycle(self) -> int:
        return max(self.collector.num_envs // self.update_every, 1)

    @property
    def steps_per_cycle(self) -> int:
        return self.collects_per_cycle * self.collector.num_envs

    @property
    def member(self) -> "Pipeline":
        """One seed's pipeline: this one (a pack of seeds holds S of them in lockstep)."""
        return self

    seeds: ClassVar[None] = None  # the seeds of a pack; one seed (the run's) here

    def pool_actions(self, actions: Array) -> Array:
        """The runner's actions (cycles, steps_per_cycle, ...) in the pool's order (T, N, ...)."""
        return actions.reshape(-1, self.collector.num_envs, *actions.shape[2:])

    @property
    def learning_starts(self) -> int:
        """Environment steps after which cycles end with gradient steps: `warmup`, but
        never before every stream holds one (n + 1)-step window (in the replay as it
        was before the cycle, with `overlap`)."""
        ready = (self.replay.n_step + 1) * self.collector.num_envs
        return max(self.warmup, ready + (self.steps_per_cycle if self.overlap else 0))

    def learns_in_cycle(self, cycle: int) -> bool:
        """Whether cycle `cycle` (0-based) ends with gradient steps; static, so the
        runner splits chunks where learning starts (and the per-cycle CNN loop picks
        its collect-only or learning program)."""
        return (cycle + 1) * self.steps_per_cycle >= self.learning_starts

    def collect(self, state: TrainState, _: Any = None) -> tuple[TrainState, dict[str, Array]]:
        """One iteration of acting and collection: N environment steps into the replay."""
        return self.receive(*self.send(state))

    def send(self, state: TrainState) -> tuple[TrainState, Sent]:
        """The first half of `collect`: acts, and hands the actions to the pool, whose
        threads step the environments until `receive` waits for them."""
        actions, key, metrics = self.choose_actions(state, state.collector.obs)
        return eqx.tree_at(lambda s: s.collector, state, self.collector.send(state.collector, actions)), Sent(
            actions, key, metrics
        )

    def receive(self, state: TrainState, sent: Sent) -> tuple[TrainState, dict[str, Array]]:
        """The second half of `collect`: the pool's step of `sent` into the replay."""
        collector_state, transition, episodes = self.collector.receive(state.collector, sent.actions)
        state = eqx.tree_at(lambda s: s.collector, self.store(state, transition, sent.key), collector_state)
        return state, {**sent.metrics, **self.episode_metrics(sent.actions, episodes)}

    def choose_actions(self, state: TrainState, obs: Array) -> tuple[Array, Array, dict[str, Array]]:
        """obs: (N, *obs_shape) -> the (N,) actions, the state's next key and the
        exploration metrics (the state's collector is not read: a seed pack steps
        one pool for all its seeds)."""
        key, act_key = jax.random.split(state.key)
        epsilon = self.exploration.epsilon(state.env_steps, self.learning_starts)
        acting_learner, metrics = state.learner, {"epsilon": epsilon}
        if self.exploration.explores_members:
            # A key of its own, so runs without the option keep their random streams.
            member_epsilon = self.exploration.member_epsilon(state.env_steps, self.learning_starts)
            acting_learner = self.learner.with_random_acting_member(
                state.learner, jax.random.fold_in(act_key, 1), member_epsilon
            )
            metrics["member_epsilon"] = member_epsilon
        return self.learner.act(acting_learner, obs, act_key, epsilon), key, metrics

    def store(self, state: TrainState, transition: Transition, key: Array) -> TrainState:
        """The N transitions into the replay; the step counter and key move on."""
        return eqx.tree_at(
            lambda s: (s.replay, s.env_steps, s.key),
            state,
            (self.replay.add(state.replay, transition), state.env_steps + self.collector.num_envs, key),
        )

    @staticmethod
    def episode_metrics(actions: Array, episodes: EpisodeStats) -> dict[str, Array]:
        return {
            # The runner keeps the actions since the last pool boundary: a run stopped
            # between boundaries resumes by stepping a fresh pool through them.
            "action": actions,
            "episode_return": episodes.episode_return,
            "episode_length": episodes.episode_length,
            "episode_done": episodes.done,
        }

    def learn(self, state: TrainState) -> tuple[TrainState, dict[str, Array]]:
        """The cycle's gradient steps, unconditionally (no `lax.cond` around them:
        XLA:CPU runs convolutions inside a conditional about 10x slower)."""
        keys = jax.random.split(state.key, self.updates_per_cycle + 1)
        learner_state, sums = state.learner, None
        for k in keys[1:]:
            batch = self.replay.sample(state.replay, k)
            learner_state, metrics = self.learner.update(learner_state, batch)
            sums = metrics if sums is None else jax.tree.map(jnp.add, sums, metrics)
        metrics = jax.tree.map(lambda x: x / self.updates_per_cycle, sums)
        return eqx.tree_at(lambda s: (s.learner, s.key), state, (learner_state, keys[0])), metrics

    def learn_metric_shapes(self, state: TrainState) -> dict[str, jax.ShapeDtypeStruct]:
        return jax.eval_shape(self.learn, state)[1]

    def _learning(self, state: TrainState) -> tuple[Any, Array, dict[str, Array]]:
        """A learning cycle's gradient steps: (learner state, key, metrics)."""
        learned, metrics = self.learn(state)
        return learned.learner, learned.key, metrics

    def _warming_up(self, state: TrainState) -> tuple[Any, Array, dict[str, Array]]:
        """A warm-up cycle's: none; `learn`'s metrics as zeros."""
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self.learn_metric_shapes(state))
        return state.learner, state.key, zeros

    def apply_operators(self, state: TrainState, steps_before: Array) -> tuple[TrainState, dict[str, Array]]:
        learner_state = state.learner
        operator_states = []
        operator_metrics: dict[str, Array] = {}
        for operator, op_state in zip(self.operators, state.operators):
            op_state, learner_state, metrics = operator(op_state, learner_state, steps_before, state.env_steps)
            operator_states.append(op_state)
            operator_metrics.update(metrics)
        new_state = eqx.tree_at(lambda s: (s.learner, s.operators), state, (learner_state, tuple(operator_states)))
        return new_state, operator_metrics

    def cycle(
        self, state: TrainState, learn: bool, unroll_collect: bool = False
    ) -> tuple[TrainState, dict[str, Array]]:
        """`update_every` environment steps, then (if `learn`) the gradient steps, then
        the operators. `learn` is a Python bool (two programs, no conditional) or a
        traced bool (one program for warm-up and learning: the gradient steps under a
        `lax.cond`, which XLA:CPU runs ~10x slower for convolutions, fine for MLPs).

        `unroll_collect` writes the collection iterations out in straight-line code
        instead of a scan: XLA:CPU runs convolutions inside loops ~10x slower, so a
        convolutional network on CPU is driven one cycle per jitted call.
        """
        return run_cycle(self, state, learn, unroll_collect)

    def overlap_source(self, before: TrainState) -> TrainState:
        """What an overlapped cycle learns from: the state from before its environment
        steps, with a key of its own."""
        return eqx.tree_at(lambda s: s.key, before, jax.random.fold_in(before.key, OVERLAP_KEY_TAG))

    @staticmethod
    def flatten_collected(collected: dict[str, Array]) -> dict[str, Array]:
        """Per-iteration series (collects, N, ...) flattened to (steps_per_cycle, ...)."""
        return {k: v.reshape(-1, *v.shape[2:]) if v.ndim >= 2 else v for k, v in collected.items()}

    @staticmethod
    def per_seed(value: Array) -> Array:
        """A cycle's metric shared by the seeds of a pack (one seed here: as it is)."""
        return value

    def step(self, state: TrainState, _: Any = None) -> tuple[TrainState, dict[str, Array]]:
        """One cycle, learning once `learning_starts` steps are reached; a pure function
        usable as a `lax.scan` body (the traced learn flag of `cycle`, as the runner's
        scan loop passes it)."""
        return self.cycle(state, state.env_steps + self.steps_per_cycle >= self.learning_starts)


def run_cycle(pipeline: Any, state: Any, learn: Any, unroll_collect: bool = False) -> tuple[Any, dict[str, Array]]:
    """The body of `Pipeline.cycle`, for any pipeline with its pieces (`collect`,
    `send`, `receive`, `overlap_source`, `_learning`, `_warming_up`,
    `apply_operators`, `flatten_collected`, `per_seed`): a pipeline and a pack of
    seeds of it share it."""
    steps_before = state.env_steps
    if pipeline.overlap:
        state, first, learned, metrics = _overlapped_collect(pipeline, state, learn)
        state, rest = _collect(pipeline, state, pipeline.collects_per_cycle - 1, unroll_collect)
        collected = first if rest is None else jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, rest)
        # The learner from before this cycle's steps learned, a key of its own: the
        # cycle acted with the learner it started with.
        state = eqx.tree_at(lambda s: (s.learner, s.operators), state, (learned.learner, learned.operators))
    else:
        state, collected = _collect(pipeline, state, pipeline.collects_per_cycle, unroll_collect)
        learner, key, learn_metrics = _gradient_steps(pipeline, state, learn)
        state = eqx.tree_at(lambda s: (s.learner, s.key), state, (learner, key))
        state, operator_metrics = pipeline.apply_operators(state, steps_before)
        metrics = {**learn_metrics, **operator_metrics}
    return state, {
        **pipeline.flatten_collected(collected),
        "steps": state.env_steps,
        "updated": pipeline.per_seed(jnp.asarray(learn)),
        "gradient_steps": pipeline.per_seed(jnp.where(learn, pipeline.updates_per_cycle, 0).astype(jnp.int32)),
        **metrics,
    }


def _collect(pipeline: Any, state: Any, iterations: int, unroll: bool) -> tuple[Any, dict[str, Array] | None]:
    """`iterations` collect iterations, their metrics stacked (None for none)."""
    if iterations == 0:
        return state, None
    if not unroll:
        return jax.lax.scan(pipeline.collect, state, None, length=iterations)
    series = []
    for _ in range(iterations):
        state, metrics = pipeline.collect(state)
        series.append(metrics)
    return state, jax.tree.map(lambda *xs: jnp.stack(xs), *series)


def _gradient_steps(pipeline: Any, learn_from: Any, learn: Any) -> tuple[Any, Array, dict[str, Array]]:
    """The cycle's (learner state, key, metrics): `learn` is a Python bool (no
    conditional) or a traced one."""
    if isinstance(learn, bool):
        return (pipeline._learning if learn else pipeline._warming_up)(learn_from)
    # Only the learner and key come out of the conditional: a replay passed through
    # it costs copies (iS-DQN's loop ran 13% slower that way).
    return jax.lax.cond(learn, pipeline._learning, pipeline._warming_up, learn_from)


def _overlapped_collect(pipeline: Any, state: Any, learn: Any) -> tuple[Any, dict[str, Array], Any, dict[str, Array]]:
    """The cycle's first collect iteration with the cycle's gradient steps and
    operators in its middle: the actions go to the pool; the gradient steps (on the
    state from before the iteration) and the operators (which read no environment
    data) run while envpool's threads step the environments; then the step is
    received. Returns the state after the iteration, its metrics (1, ...), the state
    whose learner and operators the cycle ends with, and their metrics.

    Nothing in the data asks for that order, and XLA:CPU would wait for the pool
    right after sending (it drops `optimization_barrier`s before it schedules), so
    dependencies that change no value pin it: the learning key depends on the sent
    handle; the handle the receive waits on, what the transition takes from before
    the step (observation, action, reset flag) and the replay's write cursor depend on
    every learned leaf. The cursor keeps every replay write (at slots derived from it)
    after the gradient steps' reads of the replay: XLA otherwise wrote the observation
    and action early and copied the buffers they go into, twice, for the reads
    (2 x 370 kB a step for a 10k LunarLander replay; it grows with the replay)."""
    steps_before = state.env_steps
    learn_from = pipeline.overlap_source(state)
    state, sent = pipeline.send(state)
    learn_from = eqx.tree_at(lambda s: s.key, learn_from, _after(learn_from.key, state.collector.handle))
    learner, _, learn_metrics = _gradient_steps(pipeline, learn_from, learn)
    ahead = eqx.tree_at(
        lambda s: (s.learner, s.env_steps), learn_from, (learner, steps_before + pipeline.steps_per_cycle)
    )
    ahead, operator_metrics = pipeline.apply_operators(ahead, steps_before)
    metrics = {**learn_metrics, **operator_metrics}
    zero = _zero_after((ahead.learner, ahead.operators, metrics))
    waiting = jax.tree.map(lambda x: _plus(x, zero), (state.collector, sent.actions, state.replay.count))
    state = eqx.tree_at(lambda s: (s.collector, s.replay.count), state, (waiting[0], waiting[2]))
    state, collected = pipeline.receive(state, eqx.tree_at(lambda s: s.actions, sent, waiting[1]))
    return state, jax.tree.map(lambda x: x[None], collected), ahead, metrics


def _after(value: Array, tree: Any) -> Array:
    """`value`, made to depend on every leaf of `tree` (see `_plus`)."""
    return _plus(value, _zero_after(tree))


def _zero_after(tree: Any) -> Array:
    """A () uint8 zero that XLA cannot fold away, since it reads the first element of
    every leaf of `tree`."""
    first = [_as_float(jnp.ravel(leaf)[0]) for leaf in jax.tree.leaves(tree) if jnp.size(leaf)]
    total = sum(first, jnp.zeros((), jnp.float32))
    return ((total != total) & (total == total)).astype(jnp.uint8)  # False for every float


def _plus(value: Array, zero: Array) -> Array:
    """`value` (any dtype, typed keys included) plus `zero`, bit for bit unchanged:
    floats through their bits, since -0.0 + 0 would be +0.0."""
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(value)
        return jax.random.wrap_key_data(_plus(data, zero), impl=jax.random.key_impl(value))
    if value.dtype == jnp.bool_:
        return value | zero.astype(jnp.bool_)
    if jnp.issubdtype(value.dtype, jnp.floating):
        bits = jnp.dtype(f"uint{8 * value.dtype.itemsize}")
        return jax.lax.bitcast_convert_type(_plus(jax.lax.bitcast_convert_type(value, bits), zero), value.dtype)
    return value + zero.astype(value.dtype)


def _as_float(x: Array) -> Array:
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x).ravel()[0]
    return x.astype(jnp.float32)
