"""Network analyses during training ([analysis] every = N), on the host between chunks.

At every multiple of `every` steps (a log point) the acting network is analysed on
`states` replay states: srank, dormant neurons, per-layer sparsity and weight norms
(sparseq.analysis). Policy churn needs two readings: `churn_period` steps before each
analysis point the runner ends a chunk, and a probe batch of replay states is drawn and
its greedy actions kept; at the analysis point the share of them that changed is the
churn. The probe rides in checkpoints, so a resumed run measures the same churn.

The analyses never touch the training state or its keys (their keys derive from the run
seed and the step), and chunk ends do not change what a run computes, so a run trains
identically with or without them.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.analysis.network import analyze_network, greedy_actions, policy_churn
from sparseq.analysis.options import AnalysisConfig, churn_period
from sparseq.runs.boundary import derived_seed
from sparseq.stages.learners.population import select_member
from sparseq.stages.learners.value_state import value_state_of

ANALYSIS_SEED_TAG = 0xA7A1
EXTRA = "analysis__"  # prefix of the churn probe's arrays in a checkpoint's extra


def analysis_key(run_seed: int) -> jax.Array:
    return jax.random.key(derived_seed(run_seed, ANALYSIS_SEED_TAG))


def acting_network(learner_state: Any) -> Any:
    """The network that acts: member 0 of the learner's value state (the only one, or
    the one the last selection picked; acting with a randomly drawn member, EauDeQN's
    eps_b option, is exploration on top of it)."""
    return select_member(value_state_of(learner_state).online, 0)


class Analyzer:
    """Schedules the analyses of one run; `steps_per_cycle` converts steps to cycles."""

    def __init__(self, options: AnalysisConfig, pipeline: Any, run_seed: int, steps_per_cycle: int):
        self.options = options
        self.every = options.every
        self.metrics = tuple(options.metrics)
        self.churn = "churn" in self.metrics
        self.churn_period = churn_period(options, pipeline.operators)
        self.steps_per_cycle = steps_per_cycle
        self.replay = pipeline.replay
        self.key = analysis_key(run_seed)
        self.probe: tuple[int, jax.Array, jax.Array] | None = None  # (step, states, greedy actions)
        self.next_point = self.every
        self.sample = eqx.filter_jit(self._sample_states)
        self._analyze = eqx.filter_jit(self._analyze_state)
        self._actions = eqx.filter_jit(lambda learner_state, obs: greedy_actions(acting_network(learner_state), obs))

    # -- schedule --------------------------------------------------------------
    def skip_to(self, steps: int) -> None:
        """The next analysis point after `steps` (a resumed run's start)."""
        self.next_point = (steps // self.every + 1) * self.every

    def _probe_cycle(self) -> int:
        return (self.next_point - self.churn_period) // self.steps_per_cycle

    def chunk_ends(self, cycle: int) -> list[int]:
        """Cycles after `cycle` where a chunk must end: the churn probe's first reading
        (analysis points are log points, where chunks end anyway)."""
        return [self._probe_cycle()] if self.churn and self._probe_cycle() > cycle else []

    def due(self, steps: int) -> bool:
        """At the first log point at or past each multiple of `every`."""
        return steps >= self.next_point

    def after_chunk(self, cycle: int, state: Any) -> None:
        """Takes the churn probe's first reading one churn period before the next
        analysis point."""
        if self.churn and cycle == self._probe_cycle() and cycle > 0:
            steps = cycle * self.steps_per_cycle
            obs = self.sample(state.replay, jax.random.fold_in(self.key, steps))
            self.probe = (steps, obs, self._actions(state.learner, obs))

    # -- the analyses ----------------------------------------------------------
    def _sample_states(self, replay_state: Any, key: jax.Array) -> jax.Array:
        """`states` replay observations (states, *obs_shape), in batches of the replay's size."""
        batches = -(-self.options.states // self.replay.batch_size)
        obs = jax.vmap(lambda k: self.replay.sample(replay_state, k).obs)(jax.random.split(key, batches))
        return obs.reshape(-1, *obs.shape[2:])[: self.options.states]

    def _analyze_state(self, learner_state: Any, replay_state: Any, key: jax.Array) -> dict[str, jax.Array]:
        obs = self._sample_states(replay_state, key)
        metrics = [m for m in self.metrics if m != "churn"]
        return analyze_network(
            acting_network(learner_state), obs, metrics, delta=self.options.delta, tau=self.options.tau
        )

    def run(self, state: Any, steps: int) -> dict[str, float]:
        """The analyses at `steps`, as metrics.jsonl fields."""
        values = self._analyze(state.learner, state.replay, jax.random.fold_in(self.key, steps + 1))
        record = {name: float(value) for name, value in jax.device_get(values).items()}
        if self.churn and self.probe is not None:
            probe_steps, obs, before = self.probe
            after = self._actions(state.learner, obs)
            record["analysis/churn"] = float(policy_churn(before, after))
            record["analysis/churn_steps"] = steps - probe_steps
            self.probe = None
        self.skip_to(steps)
        return record

    # -- checkpoints ---------------------------------------------------------
    def extra(self) -> dict[str, np.ndarray]:
        """The churn probe, when one is waiting for its analysis point."""
        if self.probe is None:
            return {}
        steps, obs, actions = self.probe
        return {
            f"{EXTRA}step": np.asarray([steps], np.int64),
            f"{EXTRA}states": np.asarray(obs),
            f"{EXTRA}actions": np.asarray(actions),
        }

    def restore(self, extra: dict[str, np.ndarray]) -> None:
        if f"{EXTRA}step" in extra:
            self.probe = (
                int(extra[f"{EXTRA}step"][0]),
                jnp.asarray(extra[f"{EXTRA}states"]),
                jnp.asarray(extra[f"{EXTRA}actions"]),
            )


def make_analyzer(config: Any, pipeline: Any, steps_per_cycle: int) -> Analyzer | None:
    options: AnalysisConfig = config.analysis
    if options.every <= 0:
        return None
    return Analyzer(options, pipeline, config.run.seed, steps_per_cycle)
