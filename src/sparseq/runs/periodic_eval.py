"""Evaluation episodes: the current policy with its own small epsilon (default 0.001,
Dopamine's evaluation epsilon) on a separate envpool pool, run on the host between
training chunks.

The papers sparseq follows report TRAINING returns (epsilon-greedy episodes seen
while learning); evaluation returns are the other convention (Dopamine's eval
phase, Mnih et al. 2015). sparseq logs both: `train/return_*` and `eval/return_*`
in metrics.jsonl; returns.png shows training returns on its first axes and, when
evaluation is on, the evaluation means on their own axes below, labelled as such.

Evaluation never touches the training state or its random keys (its keys derive
from the run seed and the evaluation's step), so a run trains identically with or
without it. Each evaluation resets every evaluation environment, steps until
`episodes` episodes have finished or `max_steps` agent steps are spent, and keeps
the first `episodes` finished ones (episodes still running at the cap are dropped).
One evaluation pool serves the whole run; a resumed run opens a new one, so its
evaluation episodes differ from the straight run's (training does not).
"""

import dataclasses
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.pipeline.compose import Pipeline
from sparseq.pipeline.config.build import make_collector
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.runs.boundary import derived_seed
from sparseq.stages.collect.envpool_collector import CollectorState, EnvpoolCollector
from sparseq.stages.learners.q_learner import LearnerState, QLearner

# Evaluation pools get their own seed stream, away from the training pools'.
EVAL_SEED_TAG = 0xE7A1


def eval_seed(run_seed: int) -> int:
    return derived_seed(run_seed, EVAL_SEED_TAG)


@dataclasses.dataclass
class EvalResult:
    env_steps: int  # training environment steps at which the evaluation ran
    returns: list[float]  # raw-reward returns of the finished episodes
    lengths: list[int]
    agent_steps: int  # evaluation steps spent (all evaluation environments)

    def record(self) -> dict[str, float | int | None]:
        """metrics.jsonl fields."""
        done = bool(self.returns)
        return {
            "eval/episodes": len(self.returns),
            "eval/return_mean": float(np.mean(self.returns)) if done else None,
            "eval/return_std": float(np.std(self.returns)) if done else None,
            "eval/length_mean": float(np.mean(self.lengths)) if done else None,
            "eval/agent_steps": self.agent_steps,
        }


class Evaluator:
    """Runs evaluation episodes every `config.eval.every` training steps.

    Args:
        config: the run's configuration (eval section, env options, seed).
        learner: the pipeline's learner (its `act` is the policy).
        unroll: write the `steps_per_call` steps as straight-line code (convolutional
            networks on CPU, where XLA runs convolutions ~10x slower inside loops)
            instead of a `lax.scan`.
        collector: the evaluation pool (built from `config` when None).
    """

    def __init__(
        self,
        config: PipelineConfig,
        learner: QLearner,
        *,
        unroll: bool = False,
        collector: EnvpoolCollector | None = None,
    ):
        settings = config.eval
        self.every = settings.every
        self.episodes = settings.episodes
        self.max_steps = settings.max_steps
        self.epsilon = settings.epsilon
        self.run_seed = config.run.seed
        if collector is None:
            env = dataclasses.replace(config.env, num_envs=settings.num_envs)
            collector = make_collector(dataclasses.replace(config, env=env), seed=eval_seed(config.run.seed))
        self.collector = collector
        self.learner = learner
        self.steps_per_call = 4 if unroll else 256
        self.unroll = unroll
        self.next_due = settings.every
        self.history: list[EvalResult] = []
        self._chunk = eqx.filter_jit(self._steps)
        self.video_episodes = settings.video_episodes if settings.video else 0
        self.video_max_steps = settings.video_max_steps
        self._policy = eqx.filter_jit(self._actions)

    def due(self, env_steps: int) -> bool:
        return self.every > 0 and env_steps >= self.next_due

    def skip_to(self, env_steps: int) -> None:
        """The next evaluation is at the first multiple of `every` after `env_steps`
        (a resumed run does not repeat the evaluations before its checkpoint)."""
        self.next_due = (env_steps // self.every + 1) * self.every

    def _steps(self, learner_state: LearnerState, cstate: CollectorState, key: jax.Array):
        """`steps_per_call` evaluation steps -> (cstate, (returns, lengths, done)), each
        (steps_per_call, N)."""

        def one(cstate, key):
            actions = self._actions(learner_state, cstate.obs, key)
            cstate, _, stats = self.collector.step(cstate, actions)
            return cstate, (stats.episode_return, stats.episode_length, stats.done)

        keys = jax.random.split(key, self.steps_per_call)
        if not self.unroll:
            return jax.lax.scan(one, cstate, keys)
        outputs = []
        for k in keys:
            cstate, out = one(cstate, k)
            outputs.append(out)
        return cstate, jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)

    def _actions(self, learner_state: LearnerState, obs: jax.Array, key: jax.Array) -> jax.Array:
        """The evaluated policy: a stochastic one (SAC) by its mean action, a Q-learner
        epsilon-greedy with the evaluation epsilon."""
        deterministic = getattr(self.learner, "act_deterministic", None)
        if deterministic is not None:
            return deterministic(learner_state, obs)
        return self.learner.act(learner_state, obs, key, jnp.asarray(self.epsilon, jnp.float32))

    def record_video(self, learner_state: LearnerState, env_steps: int, folder: Path):
        """Renders the evaluated policy to folder/videos/eval-STEP.mp4; the VideoResult,
        or None after one warning when rendering cannot work here."""
        from sparseq.outputs.video import VideoUnavailable, record_episodes

        def policy(obs: np.ndarray) -> np.ndarray:
            return np.asarray(self._policy(learner_state, jnp.asarray(obs, jnp.float32), jax.random.key(0)))

        path = folder / "videos" / f"eval-{env_steps}.mp4"
        path.parent.mkdir(exist_ok=True)
        try:
            return record_episodes(
                self.collector.task_id,
                policy,
                path,
                episodes=self.video_episodes,
                max_steps=self.video_max_steps,
                seed=eval_seed(self.run_seed),
                env_options=dict(self.collector.env_options),
            )
        except VideoUnavailable as error:
            if not getattr(self, "_video_warned", False):
                print(f"warning: no evaluation video: {error}", file=sys.stderr)
                self._video_warned = True
            return None

    def run(self, learner_state: LearnerState, env_steps: int) -> EvalResult:
        """One evaluation with the current parameters (host loop over jitted chunks)."""
        key = jax.random.key(eval_seed(self.run_seed + 1 + env_steps // max(self.every, 1)))
        cstate = self.collector.init()
        n = self.collector.num_envs
        returns: list[float] = []
        lengths: list[int] = []
        spent = 0
        while len(returns) < self.episodes and spent < self.max_steps:
            key, chunk_key = jax.random.split(key)
            cstate, (ret, length, done) = self._chunk(learner_state, cstate, chunk_key)
            ret, length, done = jax.device_get((ret, length, done))
            # Steps past the cap do not count: keep only rows within max_steps.
            rows = min(self.steps_per_call, -(-(self.max_steps - spent) // n))
            for t, e in zip(*np.nonzero(done[:rows])):
                returns.append(float(ret[t, e]))
                lengths.append(int(length[t, e]))
            spent += rows * n
        result = EvalResult(env_steps, returns[: self.episodes], lengths[: self.episodes], spent)
        self.history.append(result)
        self.skip_to(env_steps)
        return result

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """(training steps, mean evaluation return) of the evaluations that finished
        at least one episode, for plots."""
        done = [r for r in self.history if r.returns]
        return np.asarray([r.env_steps for r in done]), np.asarray([np.mean(r.returns) for r in done])


def make_evaluator(config: PipelineConfig, pipeline: Pipeline, loop: str) -> Evaluator | None:
    """The run's evaluator, or None when `eval.every` is 0. `loop` is the runner's loop
    kind: "cycle" (convolutions on CPU) unrolls the evaluation steps too."""
    if config.eval.every <= 0:
        return None
    return Evaluator(config, pipeline.learner, unroll=loop == "cycle")
