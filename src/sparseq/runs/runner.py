"""The host loop: jitted chunks of update cycles, logging, checkpoints, resume.

The hot path never returns to Python inside a chunk: a chunk is one `lax.scan` over
update cycles (or, for convolutional networks on CPU, one donated jitted call per
cycle, because XLA:CPU runs convolutions ~10x slower inside loops and conditionals).
Between chunks the host writes metrics.jsonl, W&B and the progress bar, checks for
non-finite values, and at checkpoint boundaries re-seeds the pool and saves.

metrics.jsonl holds only what the run computes (identical between a straight run and
a killed-and-resumed one); wall-clock figures go to timing.jsonl.
"""

import dataclasses
import datetime
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.outputs.plots import metric_series, plot_returns, preload_plotting
from sparseq.pipeline.compose import Pipeline, TrainState
from sparseq.pipeline.config.build import build_pipeline, check_pipeline_matches, seed_config
from sparseq.pipeline.config.dump import to_dict, to_toml
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.pipeline.config.validate import validate
from sparseq.runs.analysis import make_analyzer
from sparseq.runs.boundary import boundary_pool_seed, cross_boundary, replay_actions
from sparseq.runs.checkpoint import Checkpointer, write_json
from sparseq.runs.clock import compile_totals, process_seconds
from sparseq.runs.periodic_eval import make_evaluator
from sparseq.runs.provenance import write_run_record
from sparseq.runs.record import DatasetRecorder
from sparseq.runs.seed_run import SeedRun, seed_folder_name
from sparseq.runs.selections import append_selections, truncate_selections
from sparseq.stages.compile_once import filter_jit_once
from sparseq.stages.learners.value_state import value_states_of

PENDING = "pending__"  # prefix of a stopped run's unlogged metrics in its checkpoint
# Learner metrics (P,) per cycle logged as train/NAME over the chunk's gradient steps:
# the max for q_max, the mean otherwise.
# Learner metrics logged as train/NAME, averaged over the chunk's learning cycles (NaN
# where a cycle had none, e.g. SAC's actor under a policy delay).
LEARNER_DIAGNOSTICS = {
    "loss_sum",
    "q_mean",
    "q_max",
    "td_error_std",
    "grad_norm",
    "actor_loss",
    "temperature",
    "entropy",
    "cql_gap",
}


class NonFiniteError(RuntimeError):
    """A loss or parameter became NaN/Inf; the message names the step and the stage
    (and, in a pack, the seeds: `seeds`)."""

    def __init__(self, message: str, seeds: list[int] | None = None):
        super().__init__(message)
        self.seeds = list(seeds or [])


def loop_kind(config: PipelineConfig) -> str:
    if config.run.loop != "auto":
        return config.run.loop
    has_conv = config.network.kind != "mlp"
    return "cycle" if has_conv and jax.default_backend() == "cpu" else "scan"


def new_run_folder(config: PipelineConfig, name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = Path(config.run.out_dir) / f"{name}-{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = Path(config.run.out_dir) / f"{name}-{stamp}-{suffix}"
    folder.mkdir(parents=True)
    return folder


def checkpoint_folder(config: PipelineConfig, run_folder: Path) -> Path:
    return Path(config.run.checkpoint_dir) / run_folder.name


def tree_bytes(tree: Any) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))


def tree_count(tree: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array)))


def learner_sizes(learner_state: Any) -> dict[str, int]:
    """Parameter count and bytes of the learner's value networks, all of them (a SAC
    critic and actor), its whole state when it holds no ValueState."""
    parts = value_states_of(learner_state)
    if not parts:
        return {"online_parameters": tree_count(learner_state), "parameter_bytes": tree_bytes(learner_state)}
    sizes = {
        "online_parameters": sum(tree_count(v.online) for v in parts.values()),
        "parameter_bytes": sum(tree_bytes(v.online) + tree_bytes(v.target) for v in parts.values()),
        "optimizer_bytes": sum(tree_bytes(v.opt_state) for v in parts.values()),
    }
    if len(parts) > 1:
        sizes.update({f"{name}_parameters": tree_count(v.online) for name, v in parts.items()})
    return sizes


@filter_jit_once
def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


FIRST_CALL_CYCLES = 16  # a program's first call compiles it: keep it short


class ChunkRunner:
    """Runs n <= max_cycles update cycles from a state.

    "scan": ONE jitted while-loop for warm-up and learning alike, whose trip count and
    learn flag are arguments, so every chunk length (log periods, the warm-up split,
    the wall-time bound) shares one compiled program; per-cycle metrics go to
    (max_cycles, ...) buffers of which the first n rows are returned. "cycle": one
    donated jitted call per cycle (XLA:CPU runs convolutions ~10x slower inside loops
    and conditionals), compiled once per learn flag, with the stop flag read every
    cycle. `cycles_for` sizes calls to about `chunk_seconds` of wall time from the
    measured rate, so a stop request is answered within about that long.
    """

    def __init__(self, pipeline: Pipeline, kind: str, max_cycles: int, chunk_seconds: float = 2.0):
        self.pipeline = pipeline
        self.kind = kind
        self.max_cycles = max(int(max_cycles), 1)
        self.chunk_seconds = chunk_seconds
        self._compiled: dict[Any, Any] = {}  # "loop" (scan), or per learn flag (cycle)
        self._rate: dict[bool, float] = {}  # cycles per second of calls that did not compile

    def _loop(self):
        if "loop" not in self._compiled:
            self._compiled["loop"] = eqx.filter_jit(self._run_cycles, donate="all-except-first")
        return self._compiled["loop"]

    def _run_cycles(self, control: tuple[jax.Array, jax.Array], state: TrainState):
        """control: (cycles () int32, learn () bool)."""
        cycles, learn = control
        shapes = jax.eval_shape(lambda s: self.pipeline.cycle(s, True), state)[1]
        buffers = jax.tree.map(lambda x: jnp.zeros((self.max_cycles, *x.shape), x.dtype), shapes)

        def body(carry):
            i, state, buffers = carry
            state, metrics = self.pipeline.cycle(state, learn)
            buffers = jax.tree.map(lambda b, m: jax.lax.dynamic_update_index_in_dim(b, m, i, 0), buffers, metrics)
            return i + 1, state, buffers

        start = (jnp.zeros((), jnp.int32), state, buffers)
        _, state, buffers = jax.lax.while_loop(lambda carry: carry[0] < cycles, body, start)
        return state, buffers

    def _single(self, learn: bool):
        if learn not in self._compiled:
            self._compiled[learn] = eqx.filter_jit(
                lambda state: self.pipeline.cycle(state, learn, unroll_collect=True), donate="all"
            )
        return self._compiled[learn]

    def inherit_rates(self, other: "ChunkRunner") -> None:
        """Sizes chunks from `other`'s measured rates (the same pipeline on a new pool):
        the first call still compiles, so it is not timed."""
        self._rate = dict(other._rate)

    def cycles_for(self, learn: bool, wanted: int) -> int:
        """Cycles for the next call: `wanted`, cut to about `chunk_seconds` of wall time."""
        rate = self._rate.get(learn)
        if rate is None:
            return max(1, min(wanted, FIRST_CALL_CYCLES, self.max_cycles))
        return max(1, min(wanted, self.max_cycles, int(rate * self.chunk_seconds)))

    def __call__(
        self, state: TrainState, learn: bool, cycles: int, stop: Any = None
    ) -> tuple[TrainState, dict[str, np.ndarray], int]:
        """Runs `cycles` cycles (fewer with the "cycle" loop when `stop.signal` is set);
        returns the state, the per-cycle metrics (done, ...) and `done`."""
        if cycles > self.max_cycles:
            raise ValueError(f"{cycles} cycles in one call; this runner was built for at most {self.max_cycles}")
        started = time.perf_counter()
        first_call = ("loop" if self.kind == "scan" else learn) not in self._compiled  # it compiles
        if self.kind == "scan":
            control = (jnp.asarray(cycles, jnp.int32), jnp.asarray(learn))
            state, buffers = self._loop()(control, state)
            metrics = jax.tree.map(lambda x: x[:cycles], jax.device_get(buffers))
            done = cycles
        else:
            step = self._single(learn)
            series = []
            for _ in range(cycles):
                state, metrics = step(state)
                series.append(metrics)
                if stop is not None and stop.signal is not None:
                    break
            done = len(series)
            metrics = jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(series))
        if not first_call:
            self._rate[learn] = done / max(time.perf_counter() - started, 1e-6)
        return state, metrics, done


@dataclasses.dataclass
class RunResult:
    folder: Path
    summary: dict[str, Any]
    state: TrainState


class Progress:
    def __init__(self, total: int, initial: int, enabled: bool, name: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="step",
                unit_scale=True,
                desc=name,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def update(self, steps: int, postfix: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summarize_chunk(metrics: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[tuple[int, float, int]]]:
    """Host-side reduction of a chunk's per-cycle metrics to one log record and the
    list of finished training episodes (steps, return, length). `steps` (cycles,) is
    the run's step counter; an offline run has no training episodes nor epsilon."""
    record: dict[str, Any] = {}
    steps = metrics["steps"]  # (cycles,)
    cycles = steps.shape[0]
    episodes = []
    if "episode_done" in metrics:
        done = metrics["episode_done"].reshape(cycles, -1)
        returns = metrics["episode_return"].reshape(cycles, -1)
        lengths = metrics["episode_length"].reshape(cycles, -1)
        episodes = [(int(steps[c]), float(returns[c, e]), int(lengths[c, e])) for c, e in zip(*np.nonzero(done))]
        record["train/episodes"] = len(episodes)
    if episodes:
        record["train/return_mean"] = float(np.mean([r for _, r, _ in episodes]))
        record["train/length_mean"] = float(np.mean([n for _, _, n in episodes]))
    if "epsilon" in metrics:
        record["train/epsilon"] = float(metrics["epsilon"].reshape(-1)[-1])
    if "member_epsilon" in metrics:
        record["train/member_epsilon"] = float(metrics["member_epsilon"].reshape(-1)[-1])
    updated = metrics["updated"].astype(bool)
    record["train/updates"] = int(metrics["gradient_steps"].sum())
    skip = {
        "steps",
        "episode_done",
        "episode_return",
        "episode_length",
        "epsilon",
        "member_epsilon",
        "updated",
        "gradient_steps",
        "action",
    }
    for name, values in metrics.items():
        if name in skip:
            continue
        if name in LEARNER_DIAGNOSTICS:
            if updated.any():
                reduce = np.nanmax if name == "q_max" else np.nanmean
                chosen = values[updated]
                if np.isfinite(chosen).any():
                    record[f"train/{name}"] = float(reduce(chosen))
        elif name == "loss":
            if updated.any():
                loss = values[updated]  # (updates, P)
                record["train/loss"] = float(loss.mean())
                if loss.shape[-1] > 1:
                    for i, v in enumerate(loss.mean(axis=0)):
                        record[f"population/loss_{i}"] = float(v)
        elif name == "head_losses":
            if updated.any() and values.shape[-1] > 1:
                for i, v in enumerate(values[updated].mean(axis=(0, 1))):
                    record[f"heads/loss_{i + 1}"] = float(v)
        elif values.dtype == bool:
            record[f"operators/{name}"] = int(values.sum())
        else:
            last = np.asarray(values[-1])
            if last.ndim == 0:
                record[name] = float(last)
            else:
                for i, v in enumerate(last.reshape(-1)):
                    record[f"{name}_{i}"] = float(v)
    return record, episodes


def first_non_finite_step(metrics: dict[str, np.ndarray]) -> int | None:
    """The step (counter) of the first cycle whose loss is NaN/Inf, if any."""
    if "loss" not in metrics:
        return None
    loss = metrics["loss"].reshape(metrics["loss"].shape[0], -1)
    bad = metrics["updated"].astype(bool) & ~np.isfinite(loss).all(axis=1)
    if not bad.any():
        return None
    return int(metrics["steps"][int(np.argmax(bad))])


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint after the current chunk
    and stops. A second SIGINT interrupts at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print("\nstopping (a checkpoint first); Ctrl-C again to stop now", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class Trainer:
    """One run: a run folder, its pipeline and state, its checkpoints, and the outputs
    of its seed (or of every seed of a pack, `seed_runs`)."""

    def __init__(self, config: PipelineConfig, folder: Path, pipeline: Any = None, checkpoints: Path | None = None):
        self.config = config
        self.folder = folder
        self.pipeline = pipeline or build_pipeline(config)
        self.kind = loop_kind(config)
        # What the step counter counts: environment steps, or gradient steps offline.
        self.step_unit = self.pipeline.step_unit
        self.steps_per_cycle = self.pipeline.steps_per_cycle
        self.total_cycles = -(-config.run.total_steps // self.steps_per_cycle)
        self.cycles_per_log = max(config.run.log_every // self.steps_per_cycle, 1)
        every = config.run.checkpoint_every
        self.cycles_per_checkpoint = max(every // self.steps_per_cycle, 1) if every > 0 else 0
        self.first_learning_cycle = next(
            (c for c in range(self.total_cycles) if self.pipeline.learns_in_cycle(c)), self.total_cycles
        )
        self.checkpointer = Checkpointer(
            checkpoints or checkpoint_folder(config, folder),
            keep=config.run.keep_checkpoints,
            # An offline run's replay is its dataset, read from disk again on resume.
            include_replay=config.run.checkpoint_replay and self.pipeline.saves_replay,
        )
        self.cycle = 0
        self.boundary = 0
        # Metrics of the cycles since the last log point, and every action since the
        # last pool boundary (in the pool's order): what a stopped run saves.
        self.pending: list[dict[str, np.ndarray]] = []
        self.boundary_actions: list[np.ndarray] = []
        self.wall_before = 0.0  # wall seconds of the earlier segments of a resumed run
        self.segments = 1
        self.segment_started = time.perf_counter()
        member = self.pipeline.member
        # One output set per seed; evaluation episodes (eval.every > 0) on the host
        # between chunks, each seed on a pool of its own seeded as its single run's.
        if self.pipeline.seeds is None:
            self.seed_runs = [SeedRun(config, folder, None, make_evaluator(config, member, self.kind))]
        else:
            self.seed_runs = []
            for index, seed in enumerate(self.pipeline.seeds):
                single = seed_config(config, seed)
                evaluator = make_evaluator(single, member, self.kind)
                self.seed_runs.append(SeedRun(single, folder / seed_folder_name(seed), index, evaluator))
        # run.record_dataset: the collected transitions, to folder/dataset/ between chunks.
        self.recorder = DatasetRecorder(folder, self.pipeline, to_dict(config)) if config.run.record_dataset else None
        # [analysis]: network analyses at log points, on the host between chunks.
        self.analyzer = make_analyzer(config, self.pipeline, self.steps_per_cycle)

    @property
    def packed(self) -> bool:
        return self.pipeline.seeds is not None

    def open_outputs(self, meta: dict[str, Any] | None = None) -> None:
        """Opens every seed's files and W&B run; `meta` (a resume's checkpoint) gives
        the file positions to cut back to and the W&B run ids to continue."""
        positions = (meta.get("seed_runs") or [meta]) if meta is not None else [None] * len(self.seed_runs)
        for seed_run, position in zip(self.seed_runs, positions):
            seed_run.create(self.folder if self.packed else None)
            if position is None:
                seed_run.open()
            else:
                lines = (int(position["metrics_lines"]), int(position["episodes_lines"]))
                seed_run.open(truncate_to=lines, wandb_id=position.get("wandb_id"))

    def write_event(self, event: str, **fields: Any) -> None:
        for seed_run in self.seed_runs:
            seed_run.log.write_event(event, **fields)

    # -- chunk planning -------------------------------------------------------
    def _chunk_end(self) -> int:
        """Chunks end on multiples of the log and checkpoint periods (so log points
        fall on round steps) and where learning starts."""
        cycle = self.cycle
        ends = [self.total_cycles, (cycle // self.cycles_per_log + 1) * self.cycles_per_log]
        if self.cycles_per_checkpoint:
            ends.append((cycle // self.cycles_per_checkpoint + 1) * self.cycles_per_checkpoint)
        if cycle < self.first_learning_cycle:
            ends.append(self.first_learning_cycle)
        if self.analyzer is not None:
            ends.extend(self.analyzer.chunk_ends(cycle))
        return min(ends)

    def _checkpoint_due(self) -> bool:
        return bool(self.cycles_per_checkpoint) and self.cycle % self.cycles_per_checkpoint == 0

    def _new_runner(self) -> ChunkRunner:
        """A runner for the current pipeline (a new pool compiles a new loop); the rates
        the previous one measured carry over, so chunks after a boundary keep their size."""
        longest = min(self.cycles_per_log, self.total_cycles)
        runner = ChunkRunner(self.pipeline, self.kind, longest, self.config.run.chunk_seconds)
        previous = getattr(self, "runner", None)
        if previous is not None:
            runner.inherit_rates(previous)
        return runner

    def wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.segment_started

    # -- checkpoints ---------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        positions = [seed_run.position() for seed_run in self.seed_runs]
        return {
            "env_steps": self.cycle * self.steps_per_cycle,  # the step counter (gradient steps offline)
            "step_unit": self.step_unit,
            "cycle": self.cycle,
            "boundary": self.boundary,
            "config": to_dict(self.config),
            **positions[0],  # metrics_lines, episodes_lines, wandb_id (of the first seed of a pack)
            **({"seed_runs": positions} if self.packed else {}),
            "wall_seconds": self.wall_seconds(),
            "segments": self.segments,
            **({"recorder": self.recorder.position()} if self.recorder is not None else {}),
        }

    def _boundary_and_save(self, state: TrainState) -> TrainState:
        self.boundary += 1
        self.pipeline, state = cross_boundary(self.pipeline, state, boundary_pool_seed(self.config, self.boundary))
        if self.recorder is not None:
            self.recorder.flush(state.replay)  # the episodes the boundary ended
        self.boundary_actions = []
        self.runner = self._new_runner()
        self.checkpointer.save(self.cycle * self.steps_per_cycle, state, self._meta(), self._analysis_extra())
        return state

    def _analysis_extra(self) -> dict[str, np.ndarray]:
        return self.analyzer.extra() if self.analyzer is not None else {}

    def _save_stopped(self, state: TrainState) -> None:
        """Saves where a signal stopped the run, with no boundary (see boundary.py):
        the unlogged metrics and the actions since the boundary go with the state."""
        steps = self.cycle * self.steps_per_cycle
        print(f"\nstopped at step {steps:,}; saving a checkpoint", file=sys.stderr)
        extra = {}
        if self.pending:
            extra.update({PENDING + k: np.concatenate([m[k] for m in self.pending]) for k in self.pending[0]})
        if self.boundary_actions:
            extra["actions"] = np.concatenate(self.boundary_actions)
        extra.update(self._analysis_extra())
        self.checkpointer.save(steps, state, {**self._meta(), "stopped": True}, extra)

    def restore_stopped(self, state: TrainState, fresh: Any, extra: dict[str, np.ndarray]) -> TrainState:
        """The inverse of `_save_stopped`; `fresh`: the new pool's state after its reset."""
        pending = {k[len(PENDING) :]: v for k, v in extra.items() if k.startswith(PENDING)}
        self.pending = [pending] if pending else []
        collector = self.pipeline.collector
        if collector is None:  # offline: no pool to bring back
            return state
        n, shape = collector.num_envs, tuple(getattr(collector, "action_shape", ()))
        actions = extra.get("actions")
        steps = np.zeros((0, n, *shape), np.int32) if actions is None else actions.reshape(-1, n, *shape)
        if len(steps):
            print(
                f"stepping the environments through the {len(steps) * n:,} steps since the last boundary",
                file=sys.stderr,
            )
        collector_state = replay_actions(self.pipeline.collector, fresh, state.collector, steps)
        self.boundary_actions = [actions] if actions is not None else []
        return eqx.tree_at(lambda s: s.collector, state, collector_state)

    # -- the loop ------------------------------------------------------------
    def run(self, state: TrainState) -> tuple[TrainState, str]:
        """Trains from `state` at `self.cycle`; returns the final state and how the run
        ended: "finished", "stopped" (signal, checkpoint saved)."""
        self.runner = self._new_runner()
        for seed_run in self.seed_runs:
            if seed_run.evaluator is not None:
                seed_run.evaluator.skip_to(self.cycle * self.steps_per_cycle)
        if self.analyzer is not None:
            self.analyzer.skip_to(self.cycle * self.steps_per_cycle)
        started = time.perf_counter()
        progress = Progress(
            self.total_cycles * self.steps_per_cycle,
            self.cycle * self.steps_per_cycle,
            self.config.run.progress,
            self.folder.name if not self.packed else f"{self.folder.name} ({len(self.seed_runs)} seeds)",
        )
        status = "finished"
        postfix = {"return": "-", "loss": "nan"}
        compiled_before, programs_before = compile_totals()
        # The wrap-up's plotting imports, while the loop compiles (which frees the GIL).
        threading.Thread(target=preload_plotting, name="sparseq-preload", daemon=True).start()
        self.write_event(
            "loop_start", process_seconds=process_seconds(), compile_seconds=compiled_before, programs=programs_before
        )
        first_chunk = True
        try:
            with _StopRequest() as stop:
                pending_seconds = 0.0
                while self.cycle < self.total_cycles:
                    learn = self.cycle >= self.first_learning_cycle
                    cycles = self.runner.cycles_for(learn, self._chunk_end() - self.cycle)
                    chunk_started = time.perf_counter()
                    state, metrics, done = self.runner(state, learn, cycles, stop)
                    pending_seconds += time.perf_counter() - chunk_started
                    if first_chunk:
                        self.write_event("first_chunk", process_seconds=process_seconds(), cycles=done)
                        first_chunk = False
                    self._guard(state, metrics)
                    if self.recorder is not None:
                        self.recorder.flush(state.replay)
                    actions = metrics.pop("action", None)
                    if actions is not None:
                        self.boundary_actions.append(self.pipeline.pool_actions(actions))
                    self.pending.append(metrics)
                    self.cycle += done
                    if self.analyzer is not None:
                        self.analyzer.after_chunk(self.cycle, state)
                    progress.update(done * self.steps_per_cycle, postfix)
                    finished = self.cycle == self.total_cycles
                    at_log_point = self.cycle % self.cycles_per_log == 0 or finished
                    if at_log_point or self._checkpoint_due():
                        metrics = {k: np.concatenate([m[k] for m in self.pending]) for k in self.pending[0]}
                        chunk_steps = len(metrics["steps"]) * self.steps_per_cycle
                        records = self._log(metrics, chunk_steps / pending_seconds, started, state)
                        self.pending, pending_seconds = [], 0.0
                        postfix = self._postfix(records)
                    boundary_saved = self._checkpoint_due() and not finished
                    if boundary_saved:
                        state = self._boundary_and_save(state)
                    if stop.signal is not None and not finished:
                        if not boundary_saved:
                            self._save_stopped(state)
                        status = "stopped"
                        break
                if status == "finished":
                    state = self._boundary_and_save(state)
        finally:
            progress.close()
            self.checkpointer.wait()
        compiled, programs = compile_totals()
        self.write_event(
            "loop_end",
            process_seconds=process_seconds(),
            loop_seconds=time.perf_counter() - started,
            compile_seconds=compiled - compiled_before,
            programs=programs - programs_before,
        )
        return state, status

    def _guard(self, state: TrainState, metrics: dict[str, np.ndarray]) -> None:
        """NonFiniteError naming the step, the stage and (a pack) the seeds that diverged."""
        last_good = self.checkpointer.latest_step()
        keep = f"last good checkpoint: step {last_good}" if last_good is not None else "no checkpoint was written yet"
        bad = {r.seed: first_non_finite_step(r.metrics_slice(metrics)) for r in self.seed_runs}
        bad = {seed: step for seed, step in bad.items() if step is not None}
        if bad:
            step = min(bad.values())
            raise NonFiniteError(
                f"non-finite loss at {self._unit_name} {step}{self._of_seeds(bad)} (stage: learner update); {keep}",
                seeds=sorted(bad),
            )
        if bool(_all_finite(state.learner)):
            return
        steps = int(np.max(metrics["steps"][-1]))
        diverged = [r.seed for r in self.seed_runs if not bool(_all_finite(r.state_slice(state.learner)))]
        raise NonFiniteError(
            f"non-finite parameters by {self._unit_name} {steps}{self._of_seeds(diverged)} "
            f"(stage: learner update or operators); {keep}",
            seeds=diverged,
        )

    def _of_seeds(self, seeds: Any) -> str:
        if not self.packed:
            return ""
        seeds = sorted(seeds)
        return f" of seed {seeds[0]}" if len(seeds) == 1 else f" of seeds {', '.join(map(str, seeds))}"

    def _postfix(self, records: list[dict[str, Any]]) -> dict[str, str]:
        """The progress bar's return and loss: the recent training episodes' (the mean
        over the seeds of a pack), else (offline) the last evaluation's."""
        losses = [r.get("train/loss", float("nan")) for r in records]
        recent = [r.get("train/return_recent") for r in records]
        evaluated = [s.eval_return for s in self.seed_runs if s.eval_return is not None]
        if all(x is not None for x in recent) and any(s.recent for s in self.seed_runs):
            shown = f"{np.mean(recent):.1f}"
        else:
            shown = f"{np.mean(evaluated):.1f} (eval)" if evaluated else "-"
        return {"return": shown, "loss": f"{np.mean(losses):.3g}"}

    @property
    def _unit_name(self) -> str:
        return "gradient step" if self.step_unit == "gradient_steps" else "environment step"

    def _log(self, metrics, steps_per_second: float, started: float, state=None) -> list[dict[str, Any]]:
        """Writes the log point of every seed; returns their records."""
        steps = self.cycle * self.steps_per_cycle
        analysis = {}
        if self.analyzer is not None and state is not None and self.analyzer.due(steps):
            analysis = self.analyzer.run(state, steps)
        records = []
        learner = state.learner if state is not None else None
        for seed_run in self.seed_runs:
            seed_metrics = seed_run.metrics_slice(metrics)
            records.append(self._log_seed(seed_run, seed_metrics, learner, steps, steps_per_second, started, analysis))
        return records

    def _log_seed(self, seed_run: SeedRun, metrics, learner, steps: int, steps_per_second, started, analysis):
        """`learner`: the whole learner state (every seed's, in a pack); sliced only
        when this seed evaluates."""
        record, episodes = summarize_chunk(metrics)
        seed_run.take_episodes(record, episodes)
        record = {
            self.step_unit: steps,
            # Only runs that collect have training episodes (offline runs evaluate).
            **({"train/return_recent": seed_run.return_recent()} if "episode_done" in metrics else {}),
            **record,
        }
        evaluator = seed_run.evaluator
        if evaluator is not None and learner is not None and evaluator.due(steps):
            learner = seed_run.state_slice(learner)
            record.update(evaluator.run(learner, steps).record())
            seed_run.eval_return = record.get("eval/return_mean")
            if evaluator.video_episodes:
                video = evaluator.record_video(learner, steps, seed_run.folder)
                if video is not None:
                    record["eval/video_return"] = float(np.mean(video.episode_returns))
                    seed_run.wandb_log.log_video("eval/video", video)
        record.update(analysis)
        timing = {self.step_unit: steps, "time": time.perf_counter() - started, "steps_per_second": steps_per_second}
        seed_run.log.write(record, timing)
        seed_run.log.write_episodes(episodes)
        # EauDeQN: every target update, not just the last.
        append_selections(seed_run.folder, metrics, self.step_unit)
        seed_run.wandb_log.log({**record, "train/steps_per_second": steps_per_second}, steps)
        return record

    def restore_history(self) -> None:
        for seed_run in self.seed_runs:
            seed_run.restore_history()

    def summary(self, seed_run: SeedRun, state: TrainState, status: str) -> dict[str, Any]:
        """One seed's summary, across the segments of a resumed run."""
        wall = self.wall_seconds()
        steps = self.cycle * self.steps_per_cycle
        return {
            "algorithm": self.config.algorithm,
            "task_id": self.config.env.task_id,
            "seed": seed_run.seed,
            "status": status,
            self.step_unit: steps,
            "episodes": len(seed_run.returns),
            "return_recent": seed_run.return_recent(),
            "return_best_recent": seed_run.return_best_recent(),
            **({"eval_return_last": seed_run.eval_return} if seed_run.evaluator is not None else {}),
            "wall_seconds": wall,
            "steps_per_second": steps / wall if wall > 0 else None,
            "segments": self.segments,
            "loop": self.kind,
            "sparsity": seed_run.sparsity,
            **({"actor_sparsity": seed_run.actor_sparsity} if seed_run.actor_sparsity is not None else {}),
            **learner_sizes(seed_run.state_slice(state.learner)),
            "checkpoints": str(self.checkpointer.directory),
            **({"pack": self.folder.name} if self.packed else {}),
        }

    def pack_summary(self, summaries: list[dict[str, Any]], status: str) -> dict[str, Any]:
        """The pack folder's summary: its seeds' summaries and the pack's own speed."""
        wall = self.wall_seconds()
        steps = self.cycle * self.steps_per_cycle
        return {
            "algorithm": self.config.algorithm,
            "task_id": self.config.env.task_id,
            "seeds": list(self.pipeline.seeds),
            "status": status,
            self.step_unit: steps,
            "wall_seconds": wall,
            "steps_per_second": steps * len(summaries) / wall if wall > 0 else None,
            "segments": self.segments,
            "runs": {s["seed"]: {"folder": seed_folder_name(s["seed"]), **s} for s in summaries},
            "checkpoints": str(self.checkpointer.directory),
        }


def _finish(trainer: Trainer, state: TrainState, status: str) -> RunResult:
    started = time.perf_counter()
    config = trainer.config
    x_label = "gradient steps" if trainer.step_unit == "gradient_steps" else "environment steps"
    from sparseq.outputs.export import save_run_policy  # policy.eqx: what `sparseq export/evaluate` read

    summaries = []
    for seed_run in trainer.seed_runs:
        folder = seed_run.folder
        title = f"{config.algorithm} on {config.env.task_id} (seed {seed_run.seed})"
        plot = plot_returns(folder, title, extra=metric_series(folder), x_label=x_label)
        analysis_plot = None
        if trainer.analyzer is not None:
            from sparseq.outputs.analysis_plots import plot_analysis, read_analysis_records

            records = read_analysis_records(folder / "metrics.jsonl")
            analysis_plot = plot_analysis(records, folder / "analysis.png", title, trainer.step_unit, x_label)
        summary = trainer.summary(seed_run, state, status)
        write_json(folder / "summary.json", summary)
        summaries.append(summary)
        # The acting Q-network of a Q-learner, the actor of SAC; nothing for other learners.
        save_run_policy(folder, trainer.pipeline.member, seed_run.state_slice(state.learner))
        images = {"plots/returns": plot, **({"plots/analysis": analysis_plot} if analysis_plot else {})}
        seed_run.wandb_log.log_images(images)
        seed_run.wandb_log.finish(summary)
    summary = summaries[0]
    if trainer.packed:
        summary = trainer.pack_summary(summaries, status)
        write_json(trainer.folder / "summary.json", summary)
    trainer.checkpointer.close()
    trainer.write_event("wrap_up", seconds=time.perf_counter() - started, process_seconds=process_seconds())
    for seed_run in trainer.seed_runs:
        seed_run.close()
    return RunResult(folder=trainer.folder, summary=summary, state=state)


def _execute(trainer: Trainer, state: TrainState) -> RunResult:
    try:
        state, status = trainer.run(state)
    except NonFiniteError as error:
        steps = trainer.cycle * trainer.steps_per_cycle
        for seed_run in trainer.seed_runs:
            diverged = not trainer.packed or seed_run.seed in error.seeds
            summary = {"status": "non-finite" if diverged else "stopped (another seed diverged)"}
            write_json(seed_run.folder / "summary.json", {**summary, trainer.step_unit: steps})
            seed_run.close(summary["status"])
        if trainer.packed:
            write_json(trainer.folder / "summary.json", {"status": "non-finite", trainer.step_unit: steps})
        trainer.checkpointer.close()
        raise
    return _finish(trainer, state, status)


def _remove_if_unused(folder: Path, checkpoints: Path) -> None:
    """Removes a run folder (and its checkpoint folder) that a run failing before its
    first log point created: nothing in them is a result yet."""
    logged = [folder / "metrics.jsonl", *folder.glob(f"{seed_folder_name('*')}/metrics.jsonl")]
    if folder.is_dir() and not any(m.exists() and m.stat().st_size for m in logged):
        shutil.rmtree(folder, ignore_errors=True)
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()


def initial_keys(config: PipelineConfig) -> jax.Array:
    """The key `Pipeline.init` takes: the run seed's, or (a pack) one per seed, each as
    that seed's single run makes it."""
    if config.run.seeds:
        return jnp.stack([jax.random.key(seed) for seed in config.run.seeds])
    return jax.random.key(config.run.seed)


def train(
    config: PipelineConfig,
    *,
    name: str = "run",
    folder: Path | None = None,
    pipeline: Any = None,
) -> RunResult:
    """Trains `config` from scratch into a new run folder (or `folder`).

    `pipeline`, when given, must be built from `config` (another collector is fine):
    the run folder's pipeline.toml is what a rerun or resume rebuilds, so stages of your
    own go into `config.learner` / `config.operators` as `Stage("module:Class", ...)`.
    With run.seeds, one process trains every seed (see sparseq.pipeline.seed_pack),
    each into seed-<s>/ of the run folder. Raises ConfigError for a bad config, before
    any folder is made; a run that fails before its first step leaves no folder behind.
    """
    config = validate(config, lambda key: "config")
    if pipeline is None:
        pipeline = build_pipeline(config, source_of=lambda key: "config")
    else:
        check_pipeline_matches(config, pipeline)
    state = pipeline.init(initial_keys(config))
    created = folder is None or not folder.exists()
    folder = folder or new_run_folder(config, config.run.name or name)
    checkpoints = checkpoint_folder(config, folder).absolute()
    trainer = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "pipeline.toml").write_text(to_toml(config))
        write_run_record(folder, checkpoints)
        trainer = Trainer(config, folder, pipeline, checkpoints)
        trainer.open_outputs()
        return _execute(trainer, state)
    except NonFiniteError:
        raise  # summary.json says where it diverged: a result
    except BaseException:
        if trainer is not None:
            for seed_run in trainer.seed_runs:
                seed_run.close("failed")  # its W&B worker writes into the folder
        if created and not any(checkpoints.glob("*")):
            _remove_if_unused(folder, checkpoints)
        raise


def resume(
    config: PipelineConfig, folder: Path, step: int, meta: dict[str, Any], checkpoints: Path | None = None
) -> RunResult:
    """Continues the run in `folder` from its checkpoint at `step` (see resume.py for
    the checks that come first)."""
    pipeline = build_pipeline(config, pool_seed=boundary_pool_seed(config, int(meta["boundary"])))
    trainer = Trainer(config, folder, pipeline, checkpoints)
    template = pipeline.init(initial_keys(config))
    state, extra = trainer.checkpointer.restore(step, template, meta)
    if trainer.analyzer is not None:
        trainer.analyzer.restore(extra)
    if meta.get("stopped"):
        state = trainer.restore_stopped(state, getattr(template, "collector", None), extra)
    trainer.cycle = int(meta["cycle"])
    trainer.boundary = int(meta["boundary"])
    trainer.wall_before = float(meta.get("wall_seconds", 0.0))
    if trainer.recorder is not None:
        trainer.recorder.rewind(meta["recorder"])
    trainer.segments = int(meta.get("segments", 1)) + 1
    trainer.open_outputs(meta)
    for seed_run in trainer.seed_runs:
        truncate_selections(seed_run.folder, trainer.cycle * trainer.steps_per_cycle)
    trainer.restore_history()
    return _execute(trainer, state)
