"""Throughput benchmarks: figures measured side by side in ONE process.

    python bench/throughput.py                       every section
    python bench/throughput.py --quick               fewer steps (a smoke run)
    python bench/throughput.py --only dqn-full,cnn   some sections (and what they need)
    python bench/throughput.py --list                section names

Absolute figures do not carry between machines, nor between a quiet machine and a busy
one; the ratios are measured in the same process moments apart, so they do. Nothing is
asserted: targets are printed next to the figures.

Every figure is the median of several timed repeats taken after a warm-up call that
compiles; each timed call ends with `block_until_ready`. Where a ratio is the point
(full loop vs bound, cycle vs standalone update), the timers involved run in alternation
(`interleaved_rates`), so load from other processes hits both sides alike.

Adding a section (later issues do): write `def my_section(ctx: Context) -> None` that
measures with the helpers below (`env_timer`, `learner_timer`, `runner_timer`,
`update_timer`, ...) and calls `ctx.report(...)`, and decorate it with
`@section("my-section", requires=("dqn-env",))` to run after the sections it names and
reuse their figures (`ctx.figure`) or compiled timers (`ctx.timers`).
"""

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from sparseq.pipeline.compose import Pipeline, TrainState
from sparseq.pipeline.config.build import build_pipeline, make_collector
from sparseq.pipeline.config.loader import load_pipeline
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.runs.runner import ChunkRunner, loop_kind
from sparseq.runs.xla_threads import single_threaded_eigen
from sparseq.stages.collect.envpool_collector import EnvpoolCollector

single_threaded_eigen()  # the XLA flags `sparseq train` runs with (nothing has started JAX's backend yet)

# ---------------------------------------------------------------------------------
# Results, sections and the registry


@dataclasses.dataclass
class Row:
    section: str
    metric: str
    value: float
    unit: str
    target: str = ""
    note: str = ""


@dataclasses.dataclass
class Context:
    """What a section sees: the size knob, the figures and compiled timers of earlier
    sections (a later section can re-time them next to its own), the rows."""

    quick: bool = False
    peer_python: str = ""
    """The bench venv's python for peers (bench/peers/README.md); empty skips them."""
    peer_python_rejax: str = ""
    """The python of the rejax bench venv (the seeds section's peer); empty skips it."""
    figures: dict[str, float] = dataclasses.field(default_factory=dict)
    timers: dict[str, "Timer"] = dataclasses.field(default_factory=dict)
    rows: list[Row] = dataclasses.field(default_factory=list)
    current: str = ""

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def report(self, metric: str, value: float, unit: str, target: str = "", note: str = "") -> float:
        """Records a figure as `section/metric` (later sections read it with `figure`)."""
        self.figures[f"{self.current}/{metric}"] = value
        self.rows.append(Row(self.current, metric, value, unit, target, note))
        print(f"  {self.current:<12} {metric:<28} {format_value(value):>12} {unit:<10} {target}", flush=True)
        return value

    def figure(self, key: str) -> float:
        return self.figures[key]


@dataclasses.dataclass(frozen=True)
class Section:
    name: str
    run: Callable[[Context], None]
    requires: tuple[str, ...]
    doc: str


SECTIONS: dict[str, Section] = {}


def section(name: str, requires: tuple[str, ...] = ()) -> Callable[[Callable[[Context], None]], Callable]:
    """Registers a benchmark section; the registry keeps definition order."""

    def register(fn: Callable[[Context], None]) -> Callable[[Context], None]:
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        SECTIONS[name] = Section(name, fn, requires, doc)
        return fn

    return register


def resolve(names: list[str]) -> list[str]:
    """The named sections plus everything they require, in registry order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
        if name not in wanted:
            wanted.add(name)
            for dep in SECTIONS[name].requires:
                add(dep)

    for name in names:
        add(name)
    return [name for name in SECTIONS if name in wanted]


# ---------------------------------------------------------------------------------
# Timing helpers (reused by every section)


def format_value(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def time_chained(fn: Callable[[Any], Any], state: Any, repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median seconds of `state = fn(state)` over `repeats` calls after `warmup` untimed
    ones (which compile). Chained because donated inputs cannot be reused."""
    for _ in range(warmup):
        state = jax.block_until_ready(fn(state))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(fn(state))
        times.append(time.perf_counter() - start)
    return statistics.median(times), state


def load_config(pipeline: str, overrides: list[str] = ()) -> PipelineConfig:
    """A pipeline file with CLI-style overrides, exactly as `sparseq train` loads it."""
    config, _, _ = load_pipeline(pipeline, list(overrides))
    return config


def random_stored_actions(pipeline: Pipeline, shape: tuple[int, ...], key: jax.Array) -> jax.Array:
    """Replay-shaped random actions: indices for a discrete task, [-1, 1] for a continuous one."""
    if pipeline.collector.num_actions:
        return jax.random.randint(key, shape, 0, pipeline.collector.num_actions)
    return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)


def filled_state(pipeline: Pipeline, key: jax.Array) -> TrainState:
    """The pipeline's initial state with a full replay buffer of random content (the
    sample/update cost does not depend on the values), no auto-reset steps in it."""
    state = pipeline.init(key)
    replay = state.replay
    obs_key, action_key, reward_key = jax.random.split(key, 3)
    # FrameDedupReplay (Atari) stores single frames in `frames`; UniformReplay `obs`.
    obs_field = "frames" if hasattr(replay, "frames") else "obs"
    stored = getattr(replay, obs_field)
    if jnp.issubdtype(stored.dtype, jnp.integer):
        obs = jax.random.randint(obs_key, stored.shape, 0, 256).astype(stored.dtype)
    else:
        obs = jax.random.normal(obs_key, stored.shape, stored.dtype)
    filled = eqx.tree_at(
        lambda r: (getattr(r, obs_field), r.action, r.reward, r.is_reset_step, r.count),
        replay,
        (
            obs,
            random_stored_actions(pipeline, replay.action.shape, action_key),
            jax.random.normal(reward_key, replay.reward.shape),
            jnp.zeros_like(replay.is_reset_step),
            jnp.asarray(pipeline.replay.slots, jnp.int32),
        ),
    )
    return eqx.tree_at(lambda s: s.replay, state, filled)


class Timer:
    """A compiled measurement that can be repeated: each call runs `fn` once on the
    carried state (chained, because donated inputs cannot be reused) and returns its
    seconds. `units` is the work of one call (steps, updates), for rates. The
    constructor makes `warmup` untimed calls, which compile."""

    def __init__(self, fn: Callable[[Any], Any], state: Any, units: float, warmup: int = 1):
        self.fn, self.state, self.units = fn, state, units
        for _ in range(warmup):
            self.state = jax.block_until_ready(fn(self.state))

    def __call__(self) -> float:
        start = time.perf_counter()
        self.state = jax.block_until_ready(self.fn(self.state))
        return time.perf_counter() - start

    def rate(self, repeats: int) -> float:
        """Median units/s over `repeats` calls."""
        return self.units / statistics.median(self() for _ in range(repeats))


def interleaved_rates(timers: dict[str, Timer], rounds: int) -> dict[str, float]:
    """Median units/s of each timer over `rounds` rounds that call every timer once in
    turn. Load that comes and goes (other processes on the same cores) then hits all
    of them alike, so the ratios between them hold on a busy machine too."""
    seconds: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            seconds[name].append(timer())
    return {name: timers[name].units / statistics.median(times) for name, times in seconds.items()}


def random_actions(collector: EnvpoolCollector, key: jax.Array) -> jax.Array:
    """Uniform actions of the collector's action space: (N,) int32 or (N, A) float32."""
    if collector.num_actions:
        return jax.random.randint(key, (collector.num_envs,), 0, collector.num_actions)
    low = jnp.asarray(collector.action_low, jnp.float32)
    high = jnp.asarray(collector.action_high, jnp.float32)
    return jax.random.uniform(key, (collector.num_envs, *collector.action_shape), minval=low, maxval=high)


def env_timer(collector: EnvpoolCollector, steps: int, seed: int = 0) -> Timer:
    """The collector alone: random actions, `steps` iterations (N environments each)
    inside one jitted `lax.scan`; units are environment steps."""

    def body(carry, _):
        cstate, key = carry
        key, action_key = jax.random.split(key)
        actions = random_actions(collector, action_key)
        cstate, _, _ = collector.step(cstate, actions)
        return (cstate, key), None

    run = eqx.filter_jit(lambda carry: jax.lax.scan(body, carry, None, length=steps)[0])
    return Timer(run, (collector.init(), jax.random.key(seed)), steps * collector.num_envs)


def learner_timer(pipeline: Pipeline, updates: int, seed: int = 0) -> Timer:
    """`pipeline.learn` alone (replay sample + learner update) from a full buffer,
    `updates` gradient steps inside one jitted, donated `lax.scan`; units are updates."""
    per_call = pipeline.updates_per_cycle
    length = max(updates // per_call, 1)
    body = lambda state, _: (pipeline.learn(state)[0], None)  # noqa: E731
    run = eqx.filter_jit(lambda state: jax.lax.scan(body, state, None, length=length)[0], donate="all")
    return Timer(run, filled_state(pipeline, jax.random.key(seed)), length * per_call)


def learner_updates_per_second(pipeline: Pipeline, updates: int, repeats: int, seed: int = 0) -> float:
    """Gradient steps/s of `pipeline.learn` alone (see `learner_timer`)."""
    return learner_timer(pipeline, updates, seed).rate(repeats)


def update_timer(pipeline: Pipeline, calls: int, seed: int = 0) -> Timer:
    """`calls` gradient steps, each its own donated jitted call of `learner.update`
    (no sampling, no loop around it) on a fixed batch from a full buffer; units are
    updates."""
    state = filled_state(pipeline, jax.random.key(seed))
    batch = pipeline.replay.sample(state.replay, jax.random.key(seed + 1))
    update = eqx.filter_jit(lambda b, ls: pipeline.learner.update(ls, b)[0], donate="all-except-first")

    def several(learner_state):
        for _ in range(calls):
            learner_state = update(batch, learner_state)
        return learner_state

    return Timer(several, state.learner, calls)


def update_seconds(pipeline: Pipeline, calls: int, repeats: int, seed: int = 0) -> float:
    """Median seconds per standalone gradient step (see `update_timer`)."""
    return 1.0 / update_timer(pipeline, calls, seed).rate(repeats)


def runner_timer(pipeline: Pipeline, kind: str, cycles: int, seed: int = 0, warmup: int = 1) -> Timer:
    """One learning chunk of `cycles` update cycles through `ChunkRunner` (the code
    `sparseq train` runs, metrics fetched to the host included), after the collect-only
    warm-up phase the runner also goes through first; units are environment steps."""
    keys = jax.random.key(seed) if pipeline.seeds is None else jnp.stack([jax.random.key(s) for s in pipeline.seeds])
    state = pipeline.init(keys)
    first_learning = 0
    while not pipeline.learns_in_cycle(first_learning):
        first_learning += 1
    runner = ChunkRunner(pipeline, kind, max_cycles=max(cycles, first_learning))
    if first_learning:
        state = runner(state, False, first_learning)[0]
    seeds = 1 if pipeline.seeds is None else len(pipeline.seeds)
    return Timer(lambda s: runner(s, True, cycles)[0], state, cycles * pipeline.steps_per_cycle * seeds, warmup)


def runner_seconds_per_chunk(
    pipeline: Pipeline, kind: str, cycles: int, repeats: int, seed: int = 0, warmup: int = 1
) -> float:
    """Median seconds of one learning chunk through `ChunkRunner` (see `runner_timer`)."""
    timer = runner_timer(pipeline, kind, cycles, seed, warmup)
    return statistics.median(timer() for _ in range(repeats))


def bound_steps_per_second(env_sps: float, updates_per_second: float, update_every: int) -> float:
    """1 / (1/env + u/learner), u = gradient steps per environment step: the speed if
    collection and learning ran one after the other with no overhead and no overlap."""
    return 1.0 / (1.0 / env_sps + (1.0 / update_every) / updates_per_second)


# ---------------------------------------------------------------------------------
# Sections

LUNAR = "dqn-lunarlander"  # MLP 100-100, batch 32, one update per step, replay 10k, T=200


@section("dqn-env")
def dqn_env(ctx: Context) -> None:
    """Env-only steps/s: LunarLander-v3, 1 env, the pipeline's collector, random actions."""
    collector = make_collector(load_config(LUNAR))
    timer = ctx.timers["dqn-env"] = env_timer(collector, ctx.size(20_000, 2_000))
    sps = timer.rate(ctx.size(5, 3))
    ctx.report("env steps/s", sps, "steps/s", note=f"{collector.task_id}, {collector.num_envs} env, jitted scan")


@section("dqn-learner")
def dqn_learner(ctx: Context) -> None:
    """Learner-only updates/s: DQN MLP 100-100, batch 32, replay sample + Adam update."""
    pipeline = build_pipeline(load_config(LUNAR))
    timer = ctx.timers["dqn-learner"] = learner_timer(pipeline, ctx.size(10_000, 1_000))
    ups = timer.rate(ctx.size(5, 3))
    ctx.report("learner updates/s", ups, "updates/s", note="sample + update, jitted scan")


@section("dqn-full", requires=("dqn-env", "dqn-learner"))
def dqn_full(ctx: Context) -> None:
    """Full loop steps/s: DQN on LunarLander-v3 through ChunkRunner, vs the sequential bound."""
    overrides = ["--run.log-every", "2000"] if ctx.quick else []
    config = load_config(LUNAR, overrides)
    pipeline = build_pipeline(config)
    kind = loop_kind(config)
    # One chunk per log point, as `sparseq train` runs it.
    cycles = max(config.run.log_every // pipeline.steps_per_cycle, 1)
    full = ctx.timers["dqn-full"] = runner_timer(pipeline, kind, cycles)
    # The env and learner timers run again between the full-loop repeats, so the bound
    # and the full loop see the same load.
    rates = interleaved_rates(
        {"env": ctx.timers["dqn-env"], "learner": ctx.timers["dqn-learner"], "full": full}, ctx.size(5, 3)
    )
    sps = ctx.report("full-loop steps/s", rates["full"], "steps/s", note=f"{kind} loop, chunks of {cycles} cycles")
    ctx.report("env steps/s, interleaved", rates["env"], "steps/s", note="re-timed between full-loop repeats")
    ctx.report("learner updates/s, interl.", rates["learner"], "updates/s", note="re-timed between full-loop repeats")
    bound = bound_steps_per_second(rates["env"], rates["learner"], pipeline.update_every)
    ctx.report("bound 1/(1/env+1/learner)", bound, "steps/s", note="from the interleaved figures")
    ctx.report("full / bound", sps / bound, "x", target=">= 0.8")


ATARI = "dqn-atari"
# A small replay: the benchmark times one update and four env steps, not memory; the
# full-stack buffer at the pipeline's 1M capacity would need 28 GB.
ATARI_OVERRIDES = ["--replay.capacity", "10000", "--learner.warmup", "200"]


@section("cnn")
def cnn(ctx: Context) -> None:
    """Nature-CNN update (Pong-v5, batch 32, A=6): standalone jit vs the runner's cycle and scan loops."""
    config = load_config(ATARI, ATARI_OVERRIDES)
    pipeline = build_pipeline(config)
    shape = "x".join(map(str, pipeline.collector.obs_shape))
    note = f"obs {shape}, A={pipeline.collector.num_actions}"

    # The loop the runner picks (`cycle` on CPU: one donated jitted call per cycle of 4
    # env steps + 1 update + operators) against the update as its own jitted call,
    # timed in alternation so both see the same load. The cycle time is reported
    # whole: nothing is subtracted for its env steps.
    picked = loop_kind(config)
    timers = {"update": update_timer(pipeline, ctx.size(10, 3))}
    timers["cycle"] = runner_timer(pipeline, picked, ctx.size(20, 5))
    rates = interleaved_rates(timers, ctx.size(3, 2))
    standalone = ctx.report("update, standalone jit", 1e3 / rates["update"], "ms", note=note)
    steps = pipeline.steps_per_cycle
    cycle_ms = 1e3 * steps / rates["cycle"]
    note = f"{steps} env steps + 1 update; picked by the runner"
    ctx.report(f"cycle, {picked} loop", cycle_ms, "ms", note=note)
    ctx.report(f"{picked} loop / standalone", cycle_ms / standalone, "x", target="<= 1.2")

    # The other loop, to show why the runner does not pick it (on CPU the rolled scan
    # runs convolutions ~10x slower: a few cycles suffice).
    other = "scan" if picked == "cycle" else "cycle"
    slow = other == "scan" and jax.default_backend() == "cpu"
    cycles = ctx.size(3, 2) if slow else ctx.size(20, 5)
    seconds = runner_seconds_per_chunk(pipeline, other, cycles, 1 if slow else ctx.size(3, 2))
    other_ms = ctx.report(f"cycle, {other} loop", 1e3 * seconds / cycles, "ms", note="not picked")
    ctx.report(f"{other} loop / standalone", other_ms / standalone, "x")


# ---------------------------------------------------------------------------------
# iS-DQN (issue 3): the iterated shared-target loop and its update cost

ISDQN_LUNAR = "isdqn-lunarlander"  # K=3, MLP 100-100, batch 32, one update per step, T=200


@section("isdqn-full", requires=("dqn-env",))
def isdqn_full(ctx: Context) -> None:
    """Full loop steps/s: iS-DQN K=3 on LunarLander-v3 through ChunkRunner, vs the sequential bound."""
    overrides = ["--run.log-every", "2000"] if ctx.quick else []
    config = load_config(ISDQN_LUNAR, overrides)
    pipeline = build_pipeline(config)
    ups = learner_updates_per_second(pipeline, ctx.size(10_000, 1_000), ctx.size(5, 3))
    ctx.report("learner updates/s", ups, "updates/s", note="K=3: sample + iterated update, jitted scan")
    kind = loop_kind(config)
    cycles = max(config.run.log_every // pipeline.steps_per_cycle, 1)
    seconds = runner_seconds_per_chunk(pipeline, kind, cycles, ctx.size(5, 3))
    sps = ctx.report("full-loop steps/s", cycles * pipeline.steps_per_cycle / seconds, "steps/s", note=f"{kind} loop")
    bound = bound_steps_per_second(ctx.figure("dqn-env/env steps/s"), ups, pipeline.update_every)
    ctx.report("bound 1/(1/env+1/learner)", bound, "steps/s")
    ctx.report("full / bound", sps / bound, "x", target=">= 0.8")


def learner_update_seconds(
    config: PipelineConfig, obs_shape: tuple[int, ...], num_actions: int, calls: int, repeats: int
) -> float:
    """Seconds per `learner.update` as its own donated jitted call on a fixed random
    batch (no replay, no environment: only the learner the config builds)."""
    from sparseq.pipeline.config.build import learner_for_shapes
    from sparseq.types import Batch

    learner = learner_for_shapes(config, obs_shape, num_actions)
    keys = jax.random.split(jax.random.key(0), 4)
    size = config.replay.batch_size
    frames = jax.random.randint(keys[0], (2, size, *obs_shape), 0, 256).astype(jnp.uint8)
    batch = Batch(
        obs=frames[0],
        action=jax.random.randint(keys[1], (size,), 0, num_actions),
        reward=jax.random.normal(keys[2], (size,)),
        discount=jnp.full((size,), config.learner.gamma),
        next_obs=frames[1],
    )
    update = eqx.filter_jit(lambda b, ls: learner.update(ls, b)[0], donate="all-except-first")

    def several(learner_state):
        for _ in range(calls):
            learner_state = update(batch, learner_state)
        return learner_state

    seconds, _ = time_chained(several, learner.init(keys[3]), repeats)
    return seconds / calls


@section("isdqn-update")
def isdqn_update(ctx: Context) -> None:
    """Update time, Nature CNN + LayerNorm (84x84x4, batch 32, A=18): iS-DQN K=9 vs DQN, standalone jit."""
    # Same torso on both sides (LayerNorm on for DQN too): the ratio isolates the
    # iterated loss (one forward on concat(s, s'), 10 heads) against DQN's online
    # forward on s plus a separate target forward on s'.
    obs_shape, actions = (4, 84, 84), 18
    dqn = load_config(ATARI, ["--network.layer-norm"])
    isdqn = load_config("isdqn-atari")
    calls, repeats = ctx.size(10, 3), ctx.size(3, 2)
    dqn_ms = 1e3 * learner_update_seconds(dqn, obs_shape, actions, calls, repeats)
    ctx.report("DQN update", dqn_ms, "ms", note="1 head + target network")
    # The pipeline's choice (s' in its own stop-gradient pass), then the reference
    # code's single pass on concat(s, s') for comparison.
    is_ms = 1e3 * learner_update_seconds(isdqn, obs_shape, actions, calls, repeats)
    note = f"10 heads, online_forward = {isdqn.learner.online_forward}"
    ctx.report("iS-DQN K=9 update", is_ms, "ms", note=note)
    ctx.report("iS-DQN / DQN", is_ms / dqn_ms, "x", target="<= 1.3")
    concat = load_config("isdqn-atari", ["--learner.online-forward", "concat"])
    concat_ms = 1e3 * learner_update_seconds(concat, obs_shape, actions, calls, repeats)
    ctx.report("iS-DQN K=9 update, concat", concat_ms, "ms", note="one pass on concat(s, s')")
    ctx.report("iS-DQN concat / DQN", concat_ms / dqn_ms, "x")


# ---------------------------------------------------------------------------------
# Atari (issue 5): Pong-v5 at the papers' protocol, DQN / iS-DQN K=3 / EauDeDQN K=5

ATARI_VARIANTS = (
    ("DQN", "dqn-atari", []),
    ("iS-DQN K=3", "isdqn-atari", ["--network.iterations", "3"]),
    ("EauDeDQN K=5", "eaudedqn-atari", []),
)


@section("atari-env")
def atari_env(ctx: Context) -> None:
    """Env-only steps/s: Pong-v5 with the atari preset, 1 env (and 8 on a GPU machine's CPU)."""
    for num_envs in (1, 8) if jax.default_backend() != "cpu" else (1,):
        collector = make_collector(load_config(ATARI, ["--env.num-envs", str(num_envs)]))
        timer = ctx.timers[f"atari-env-{num_envs}"] = env_timer(collector, ctx.size(2_000, 400))
        sps = timer.rate(ctx.size(3, 2))
        ctx.report(f"env steps/s, {num_envs} env", sps, "steps/s", note="frame-stack zero padding included")


@section("atari-full", requires=("atari-env",))
def atari_full(ctx: Context) -> None:
    """Full loop steps/s, Pong-v5, 1 env, Nature CNN, 1 update per 4 steps: vs env-only + update time."""
    gpu = jax.default_backend() != "cpu"
    for label, pipeline_name, overrides in ATARI_VARIANTS:
        for num_envs in (1, 8) if gpu else (1,):
            config = load_config(pipeline_name, [*ATARI_OVERRIDES, *overrides, "--env.num-envs", str(num_envs)])
            pipeline = build_pipeline(config)
            kind = loop_kind(config)
            cycles = ctx.size(25, 5)  # a cycle: max(4, N) env steps and their updates
            full = runner_timer(pipeline, kind, cycles)
            if num_envs != 1:
                sps = full.rate(ctx.size(3, 2))
            else:
                # Env, update and full loop in alternation: the bound and the loop see the same load.
                update_only = update_timer(pipeline, ctx.size(10, 3))
                timers = {"env": ctx.timers["atari-env-1"], "update": update_only, "full": full}
                rates = interleaved_rates(timers, ctx.size(3, 2))
                sps, env_sps, update = rates["full"], rates["env"], 1.0 / rates["update"]
            ctx.report(
                f"{label}, {num_envs} env",
                sps,
                "steps/s",
                note=f"{kind} loop, replay {type(pipeline.replay).__name__}",
            )
            if gpu:
                ctx.report(f"{label}, {num_envs} env: 10M steps", 1e7 / sps / 3600, "hours", note="projected")
            if num_envs != 1:
                continue
            ctx.report(f"{label} env, interleaved", env_sps, "steps/s", note="re-timed between full-loop repeats")
            ctx.report(f"{label} update", 1e3 * update, "ms", note="standalone jit, no sampling, interleaved")
            # The bound: env-only time of 4 steps plus one update, nothing overlapped.
            bound = pipeline.update_every / (pipeline.update_every / env_sps + update)
            ctx.report(f"{label} bound", bound, "steps/s", note="4 / (4 / env + update)")
            ctx.report(f"{label} full / bound", sps / bound, "x", target=">= 0.8")


@section("atari-capacity")
def atari_capacity(ctx: Context) -> None:
    """DQN Pong-v5 full loop with the papers' 1M replay (frame-deduplicated, 7.1 GB) next to a 10k one."""
    # The cycle's cost should not grow with the capacity: sampling and writing touch a
    # batch and a transition, not the buffer. Needs ~7.5 GB of memory.
    timers = {}
    for capacity in (1_000_000, 10_000):
        config = load_config(ATARI, [*ATARI_OVERRIDES, "--replay.capacity", str(capacity)])
        pipeline = build_pipeline(config)
        timers[capacity] = runner_timer(pipeline, loop_kind(config), ctx.size(40, 10))
    rates = interleaved_rates(timers, ctx.size(5, 2))
    for capacity, sps in rates.items():
        ctx.report(f"full loop, replay {capacity:,}", sps, "steps/s", note="interleaved")
    ctx.report("1M / 10k replay", rates[1_000_000] / rates[10_000], "x", target="~1")


# ---------------------------------------------------------------------------------
# EauDeQN / PolyPruneQN (issue 4): the masked population's update and full-loop cost

SPARSE_VARIANTS = (
    (
        "EauDeDQN K=5",
        "eaudedqn-lunarlander",
        ["--learner.population", "5", "--operators.prune-select.num-networks", "5"],
    ),
    ("PolyPruneDQN", "polyprunedqn-lunarlander", []),
)


@section("sparse-update", requires=("dqn-learner",))
def sparse_update(ctx: Context) -> None:
    """Update time, MLP 100-100 (LunarLander-v3, batch 32): EauDeDQN K=5 and PolyPruneDQN vs DQN, in a scan."""
    # Sample + masked update inside one jitted scan, as the MLP runs in training; the
    # DQN figure is dqn-learner's, measured moments before in this process.
    dqn_ups = ctx.figure("dqn-learner/learner updates/s")
    for label, name, overrides in SPARSE_VARIANTS:
        pipeline = build_pipeline(load_config(name, overrides))
        ups = learner_updates_per_second(pipeline, ctx.size(10_000, 1_000), ctx.size(5, 3))
        ctx.report(f"{label} updates/s", ups, "updates/s", note="sample + masked update, jitted scan")
        target = "<= 2.5" if label.startswith("EauDe") else ""
        ctx.report(f"{label} / DQN update time", dqn_ups / ups, "x", target=target)


@section("sparse-full", requires=("dqn-env", "dqn-full"))
def sparse_full(ctx: Context) -> None:
    """Full loop steps/s, LunarLander-v3: EauDeDQN K=5 and PolyPruneDQN through ChunkRunner, operators included."""
    dqn_sps = ctx.figure("dqn-full/full-loop steps/s")
    for label, name, overrides in SPARSE_VARIANTS:
        extra = ["--run.log-every", "2000"] if ctx.quick else []
        # One log chunk (10k steps) holds 50 target updates (selections), or 10 mask
        # recomputations once PolyPrune's window is opened from step 0.
        opened = ["--operators.poly-prune.start", "0"] if label == "PolyPruneDQN" else []
        config = load_config(name, [*overrides, *extra, *opened])
        pipeline = build_pipeline(config)
        kind = loop_kind(config)
        cycles = max(config.run.log_every // pipeline.steps_per_cycle, 1)
        seconds = runner_seconds_per_chunk(pipeline, kind, cycles, ctx.size(5, 3))
        steps = cycles * pipeline.steps_per_cycle
        sps = ctx.report(f"{label} steps/s", steps / seconds, "steps/s", note=f"{kind} loop, operators included")
        ctx.report(f"{label} / DQN steps/s", sps / dqn_sps, "x")


SAC = "sac-halfcheetah"  # twin critics 256-256, actor 256-256, batch 256, one update per step
SAC_OVERRIDES = ["--replay.capacity", "100000", "--learner.warmup", "1000"]


@section("sac-env")
def sac_env(ctx: Context) -> None:
    """Env-only steps/s: HalfCheetah-v5, 1 env, envpool's XLA step (scoped x64) vs host stepping."""
    config = load_config(SAC, SAC_OVERRIDES)
    xla = make_collector(config)
    host = make_collector(dataclasses.replace(config, env=dataclasses.replace(config.env, mode="host")))
    steps = ctx.size(10_000, 1_000)
    timers = {"xla": env_timer(xla, steps), "host": env_timer(host, steps)}
    ctx.timers["sac-env"] = timers["xla"]
    rates = interleaved_rates(timers, ctx.size(5, 3))
    ctx.report("env steps/s, xla (x64)", rates["xla"], "steps/s", note="envpool XLA step traced under enable_x64")
    ctx.report("env steps/s, host", rates["host"], "steps/s", note="io_callback to env.step")
    ctx.report("xla / host", rates["xla"] / rates["host"], "x", note="picks the preset's env.mode")


@section("sac-full", requires=("sac-env",))
def sac_full(ctx: Context) -> None:
    """SAC on HalfCheetah-v5: full loop vs update-only, and SBX's SAC at the same settings."""
    config = load_config(SAC, SAC_OVERRIDES)
    pipeline = build_pipeline(config)
    updates = ctx.size(1_000, 100)
    learner = ctx.timers["sac-learner"] = learner_timer(pipeline, updates)
    full = ctx.timers["sac-full"] = runner_timer(pipeline, loop_kind(config), updates)
    rates = interleaved_rates({"env": ctx.timers["sac-env"], "learner": learner, "full": full}, ctx.size(5, 3))
    ctx.report("update-only updates/s", rates["learner"], "updates/s", note="sample + critic/actor/alpha step")
    sps = ctx.report("full-loop steps/s", rates["full"], "steps/s", note=f"ChunkRunner, chunks of {updates}")
    ctx.report("full / update-only", sps / rates["learner"], "x", target=">= 0.9")
    bound = bound_steps_per_second(rates["env"], rates["learner"], pipeline.update_every)
    ctx.report("full / sequential bound", sps / bound, "x", note="bound 1/(1/env + 1/update)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers.run_peer import run_sbx

    warmup = 5_000
    peer = run_sbx(ctx.peer_python, "HalfCheetah-v5", warmup + ctx.size(2_500, 1_000), warmup, seed=0)
    if peer is None or not peer.get("steps_per_s_after_warmup"):
        return
    sbx = ctx.report("SBX SAC steps/s", peer["steps_per_s_after_warmup"], "steps/s", note="after warm-up and compile")
    # sparseq's full loop re-timed after the peer, so both sides see the load of the moment.
    again = full.rate(ctx.size(3, 2))
    ctx.report("full-loop steps/s, re-timed", again, "steps/s", note="right after the SBX run")
    ctx.report("sparseq / SBX", min(sps, again) / sbx, "x", target=">= 1.4", note="the lower sparseq figure")


# ---------------------------------------------------------------------------------
# Driver


def synthetic_lunar_dataset(folder: Path, transitions: int) -> None:
    """A Minari dataset of LunarLander-v3's shapes (obs (8,), 4 actions) in 500-step
    episodes of random values: gradient-step speed does not depend on the values."""
    import numpy as np

    from sparseq.stages.datasets.minari_format import MinariWriter
    from sparseq.stages.datasets.stream import Episode

    rng = np.random.default_rng(0)
    writer = MinariWriter(folder / "data", obs_shape=(8,), num_actions=4, dataset_id="bench/lunar-v0", durable=False)
    length, episodes = 500, []
    for _ in range(max(transitions // length, 1)):
        flags = np.zeros(length, bool)
        episodes.append(
            Episode(
                observations=rng.standard_normal((length + 1, 8)).astype(np.float32),
                actions=rng.integers(0, 4, length).astype(np.int32),
                rewards=rng.standard_normal(length).astype(np.float32),
                terminations=flags,
                truncations=np.r_[flags[:-1], True],
            )
        )
    writer.append(episodes)


@section("offline", requires=("dqn-learner",))
def offline(ctx: Context) -> None:
    """Offline CQL on LunarLander-v3 from a 200k-transition dataset on disk, through
    ChunkRunner (what `sparseq train` runs), interleaved with the online learner-only
    timer of dqn-learner (sample + update from the online replay)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sparseq-bench-offline-"))
    synthetic_lunar_dataset(folder, ctx.size(200_000, 20_000))
    pipeline = build_pipeline(load_config("offline-cql-lunarlander", ["--dataset.path", str(folder)]))
    timer = runner_timer(pipeline, "scan", ctx.size(10_000, 1_000))
    rates = interleaved_rates({"offline": timer, "online": ctx.timers["dqn-learner"]}, ctx.size(5, 3))
    ctx.report("offline CQL gradient steps/s", rates["offline"], "updates/s", note="200k transitions, ChunkRunner")
    ctx.report("online learner updates/s", rates["online"], "updates/s", note="dqn-learner, same rounds")
    ctx.report("offline / online learner", rates["offline"] / rates["online"], "x", target=">= 0.9")


def machine_line() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    device = jax.devices()[0]
    return (
        f"jax {jax.__version__}, backend {jax.default_backend()} ({device.device_kind}), "
        f"{os.cpu_count()} cpus, load average {load:.2f} at start"
    )


def print_table(rows: list[Row]) -> None:
    headers = ("section", "metric", "value", "unit", "target", "note")
    cells = [(r.section, r.metric, format_value(r.value), r.unit, r.target, r.note) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values) -> str:
        parts = [v.rjust(w) if i == 2 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))]
        return "  ".join(parts).rstrip()

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for c in cells:
        print(line(c))


# ---------------------------------------------------------------------------------
# Overlap (issue 13): the env step and the gradient step of a cycle made independent

OVERLAP_TARGETS = {"bound": ">= 1.25", "min": ">= 0.75"}


@section("overlap", requires=("dqn-env",))
def overlap(ctx: Context) -> None:
    """DQN and iS-DQN K=3 on LunarLander-v3, 1 env: full loop with learner.overlap off and on, vs the bounds.

    XLA's intra-op pool is sized once per process: `sparseq train` gives an overlapped
    run one thread (NPROC=1), so run this section as `NPROC=1 python bench/throughput.py
    --only overlap` for the figures an overlapped run gets (its note says which)."""
    env = ctx.timers["dqn-env"]
    for name in (LUNAR, ISDQN_LUNAR):
        overrides = ["--run.log-every", "2000"] if ctx.quick else []
        pipeline = build_pipeline(load_config(name, overrides))
        cycles = max(ctx.size(10_000, 2_000) // pipeline.steps_per_cycle, 1)
        timers = {"env": env, "learner": learner_timer(pipeline, ctx.size(10_000, 1_000))}
        for flag in ("off", "on"):
            variant = build_pipeline(load_config(name, [*overrides, "--learner.overlap", str(flag == "on").lower()]))
            timers[flag] = runner_timer(variant, loop_kind(load_config(name)), cycles)
        rates = interleaved_rates(timers, ctx.size(5, 3))
        label = "DQN" if name == LUNAR else "iS-DQN K=3"
        pool = os.environ.get("NPROC", "default")  # `sparseq train` sets 1 for overlapped runs
        ctx.report(f"{label}: env-only", rates["env"], "steps/s", note=f"interleaved, NPROC={pool}")
        ctx.report(f"{label}: update-only", rates["learner"], "updates/s", note="interleaved")
        bound = bound_steps_per_second(rates["env"], rates["learner"], pipeline.update_every)
        ctx.report(f"{label}: sequential bound", bound, "steps/s", note="1/(1/env + 1/update)")
        floor = min(rates["env"], rates["learner"] * pipeline.update_every)
        for flag in ("off", "on"):
            ctx.report(f"{label}: full, overlap {flag}", rates[flag], "steps/s")
            ctx.report(f"{label}: full/bound, {flag}", rates[flag] / bound, "x", target=OVERLAP_TARGETS["bound"])
            ctx.report(f"{label}: full/min, {flag}", rates[flag] / floor, "x", target=OVERLAP_TARGETS["min"])


# ---------------------------------------------------------------------------------
# Whole process (issue 13): start-up, compile, loop and wrap-up of `sparseq train`

PROCESS_PIPELINE = "isdqn-lunarlander"
OFFICIAL_ISDQN_SPS = (1_535, 1_770)  # the official iS-DQN code, same settings, compile included (issue 13)


def timed_train(pipeline: str, steps: int, cache: Path, cwd: Path, flags: list[str] = ()) -> dict[str, float]:
    """Runs `sparseq train PIPELINE --run.total-steps STEPS FLAGS` in a child process
    with the compilation cache at `cache`; returns its wall time split by timing.jsonl's
    events."""
    import json
    import subprocess

    env = {**os.environ, "SPARSEQ_COMPILATION_CACHE": str(cache), "WANDB_SILENT": "true"}
    command = [sys.executable, "-m", "sparseq.cli", "train", pipeline, f"--run.total-steps={steps}"]
    command.extend(["--no-run.progress", *flags])
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    total = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sparseq train failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    folder = max((cwd / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    events = {}
    for line in (folder / "timing.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "event" in record:
            events[record["event"]] = record
    start, end = events["loop_start"], events["loop_end"]
    compile_seconds = end["compile_seconds"]
    return {
        "total": total,
        "start-up": start["process_seconds"],
        "first chunk": events["first_chunk"]["process_seconds"],
        "compile": compile_seconds,
        "loop": end["loop_seconds"] - compile_seconds,
        "wrap-up": total - end["process_seconds"],
        "programs": end["programs"],
    }


@section("process")
def process(ctx: Context) -> None:
    """Whole `sparseq train isdqn-lunarlander` process: start-up, compile, loop, wrap-up; cold and warm cache.

    Then the same with `--learner.overlap=true` (one XLA thread, see `overlap`)."""
    import tempfile

    steps = ctx.size(200_000, 20_000)
    with tempfile.TemporaryDirectory(prefix="sparseq-process-") as folder:
        cache, cwd = Path(folder) / "cache", Path(folder) / "work"
        cwd.mkdir()
        # The overlapped runs (learner.overlap, off by default) compile a loop of their own:
        # the first of them finds the cache warm for everything else, the second for all.
        runs = [
            ("cold cache", [], "<= 6 s"),
            ("warm cache", [], "<= 3 s"),
            ("overlap on, first", ["--learner.overlap=true"], ""),
            ("overlap on, warm cache", ["--learner.overlap=true"], "<= 3 s"),
        ]
        for label, flags, target in runs:
            split = timed_train(PROCESS_PIPELINE, steps, cache, cwd, flags)
            overhead = split["start-up"] + split["compile"] + split["wrap-up"]
            ctx.report(f"{label}: whole process", split["total"], "s", note=f"{steps:,} steps")
            ctx.report(f"{label}: start-up", split["start-up"], "s", note="process start -> loop start")
            ctx.report(f"{label}: first chunk at", split["first chunk"], "s", note="first env steps done")
            note = f"{split['programs']} programs traced/compiled in the loop"
            ctx.report(f"{label}: compile in loop", split["compile"], "s", note=note)
            ctx.report(f"{label}: loop", split["loop"], "s", note="loop seconds less its compile")
            ctx.report(f"{label}: wrap-up", split["wrap-up"], "s", note="loop end -> process exit")
            ctx.report(f"{label}: non-loop total", overhead, "s", target=target)
            sps = ctx.report(f"{label}: process steps/s", steps / split["total"], "steps/s")
            low, high = OFFICIAL_ISDQN_SPS
            note = f"over {high:,} ({low:,}-{high:,})"
            ctx.report(f"{label}: vs official iS-DQN", sps / high, "x", target=">= 3.5", note=note)


BOUNDARY_RUNS = {
    "MLP (isdqn-lunarlander)": ("isdqn-lunarlander", 40_000, []),
    "CNN (dqn-atari, per-cycle loop)": ("dqn-atari", 2_000, ["--replay.capacity=10000", "--learner.warmup=200"]),
}


@section("boundary")
def boundary(ctx: Context) -> None:
    """What a checkpoint boundary costs: one run with 0, one with 3 interior boundaries (new pool, loop recompiled)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="sparseq-boundary-") as folder:
        cache, cwd = Path(folder) / "cache", Path(folder) / "work"
        cwd.mkdir()
        for label, (pipeline, steps, flags) in BOUNDARY_RUNS.items():
            steps = ctx.size(steps, steps // 4)
            timed_train(pipeline, steps // 4, cache, cwd, flags)  # fills the cache: both runs below start warm
            plain = timed_train(pipeline, steps, cache, cwd, flags)
            every = f"--run.checkpoint-every={steps // 4}"
            bounded = timed_train(pipeline, steps, cache, cwd, [*flags, every, "--run.checkpoint-replay=false"])
            extra = bounded["compile"] - plain["compile"]
            note = f"{steps:,} steps, 3 boundaries + the final one vs the final one only"
            ctx.report(f"{label}: compile/boundary", extra / 3, "s", note=note)
            ctx.report(f"{label}: programs/boundary", (bounded["programs"] - plain["programs"]) / 3, "")
            ctx.report(f"{label}: wall/boundary", (bounded["total"] - plain["total"]) / 3, "s", note="replay not saved")


# ---------------------------------------------------------------------------------
# Seeds in one process (issue 16): S seeds of DQN in lockstep on one pool

SEED_COUNTS = (1, 4, 8)
SEEDS_TARGETS = {"cpu": ">= 1.3 (S=8)", "gpu": ">= 6 (S=8)"}


@section("seeds")
def seeds(ctx: Context) -> None:
    """DQN on CartPole-v1 and LunarLander-v3, S = 1, 4, 8 seeds in one process: aggregate env steps/s vs S = 1."""
    target = SEEDS_TARGETS["gpu" if jax.default_backend() == "gpu" else "cpu"]
    for name in ("dqn-cartpole", LUNAR):
        steps = ctx.size(10_000, 2_000)
        timers = {}
        for count in SEED_COUNTS:
            # S = 1 is the plain single-seed run (what one process per seed gets); S > 1 a pack.
            flags = ["--run.seeds", *map(str, range(count))] if count > 1 else []
            pipeline = build_pipeline(load_config(name, flags))
            timers[count] = runner_timer(pipeline, "scan", max(steps // pipeline.steps_per_cycle, 1))
        rates = interleaved_rates(timers, ctx.size(5, 3))
        task = load_config(name).env.task_id
        for count in SEED_COUNTS:
            ctx.report(f"{task} S={count}", rates[count], "steps/s", note="aggregate over the seeds, interleaved")
        for count in SEED_COUNTS[1:]:
            ratio_target = target if count == SEED_COUNTS[-1] else ""
            ctx.report(f"{task} S={count} / S=1", rates[count] / rates[1], "x", target=ratio_target)
    if ctx.peer_python_rejax:
        from peers.run_peer import run_rejax

        peer = {count: run_rejax(ctx.peer_python_rejax, count, ctx.size(50_000, 10_000)) for count in SEED_COUNTS}
        if all(peer.values()):
            for count in SEED_COUNTS:
                rate = peer[count]["aggregate_steps_per_s"]
                ctx.report(f"rejax CartPole S={count}", rate, "steps/s", note="gymnax, vmapped train, compile excluded")
            for count in SEED_COUNTS[1:]:
                ratio = peer[count]["aggregate_steps_per_s"] / peer[1]["aggregate_steps_per_s"]
                ctx.report(f"rejax CartPole S={count} / S=1", ratio, "x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated section names (their requirements run too)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument(
        "--peer-python",
        default="/work/bench-venv/bin/python",
        help="python of the bench venv with the peers (SBX); see bench/peers/README.md",
    )
    parser.add_argument(
        "--peer-python-rejax",
        default="/work/bench-venv-rejax/bin/python",
        help="python of the bench venv with rejax (seeds section); see bench/peers/README.md",
    )
    args = parser.parse_args(argv)
    if args.list:
        for s in SECTIONS.values():
            needs = f" (needs {', '.join(s.requires)})" if s.requires else ""
            print(f"{s.name:<14} {s.doc}{needs}")
        return 0
    names = resolve([n.strip() for n in args.only.split(",") if n.strip()] or list(SECTIONS))
    print(machine_line(), flush=True)
    ctx = Context(quick=args.quick, peer_python=args.peer_python, peer_python_rejax=args.peer_python_rejax)
    started = time.perf_counter()
    for name in names:
        ctx.current = name
        print(f"[{name}] {SECTIONS[name].doc}", flush=True)
        section_started = time.perf_counter()
        SECTIONS[name].run(ctx)
        print(f"  ({time.perf_counter() - section_started:.0f} s)", flush=True)
    print(f"\nthroughput ({'quick, ' if args.quick else ''}{time.perf_counter() - started:.0f} s in all)")
    print_table(ctx.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
