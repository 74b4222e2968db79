"""The pipeline-file schema: frozen dataclasses, one per TOML section.

The same classes are the CLI (`sparseq train PIPELINE --replay.batch-size 64`) and
the Python API (`build_pipeline(PipelineConfig(...))`). The sections of the stages
(env, network, replay) are the options dataclasses declared next to those stages; the
learner and the operators are `Stage(kind, options)` entries whose options class the
kind decides. Defaults are DQN on CartPole-v1 with the iS-QL paper's small-task
settings.
"""

from dataclasses import dataclass
from typing import Literal

from sparseq.analysis.options import AnalysisConfig
from sparseq.pipeline.stage import Stage
from sparseq.stages.collect.options import AtariConfig, EnvConfig
from sparseq.stages.datasets.options import DatasetConfig
from sparseq.stages.learners.q_learner import QLearnerOptions
from sparseq.stages.networks.options import NetworkConfig
from sparseq.stages.operators.target_sync import TargetSyncOptions
from sparseq.stages.replay.options import ReplayConfig

__all__ = [
    "AnalysisConfig",
    "AtariConfig",
    "DatasetConfig",
    "EnvConfig",
    "EvalConfig",
    "ExplorationConfig",
    "NetworkConfig",
    "PipelineConfig",
    "ReplayConfig",
    "RunConfig",
    "Stage",
    "WandbConfig",
]


@dataclass(frozen=True)
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline writes W&B files into the run folder (`wandb sync` uploads them later)."""
    project: str = "sparseq"
    entity: str = ""
    group: str = ""


@dataclass(frozen=True)
class RunConfig:
    name: str = ""
    """Run name; empty uses the pipeline file's name."""
    seed: int = 0
    seeds: tuple[int, ...] = ()
    """Seeds trained together in one process, in lockstep on one environment pool
    (each as a separate run with that seed would be; each writes a run folder of its
    own under this run's folder, seed-<s>/); empty: the one seed `run.seed`."""
    total_steps: int = 100_000
    """Environment steps (all environments together)."""
    schedule_steps: int = 0
    """Environment steps over which schedules given as fractions of the run (PolyPrune's
    window, PruneSelect's horizon) are laid out; 0 = total_steps. A resume that changes
    total_steps sets it to the old total, so every schedule stays in absolute steps."""
    log_every: int = 5_000
    """Environment steps between log points."""
    chunk_seconds: float = 2.0
    """Wall-time bound of one jitted call of the loop: a stop signal (Ctrl-C, SIGTERM)
    is answered within about this long. Chunk lengths are an argument of the compiled
    loop, so this never recompiles it."""
    out_dir: str = "runs"
    """Run folders go to OUT_DIR/NAME-TIME/."""
    loop: Literal["auto", "scan", "cycle"] = "auto"
    """scan: one jitted lax.scan per log point; cycle: one jitted call per update
    cycle (XLA:CPU runs convolutions ~10x slower inside loops); auto: cycle for
    convolutional networks on CPU, scan otherwise."""
    progress: bool = True
    checkpoint_every: int = 0
    """Environment steps between checkpoints (and pool re-seeding boundaries, which make
    resume exact); 0 saves only at the end of the run."""
    checkpoint_dir: str = "checkpoints"
    """Checkpoints go to CHECKPOINT_DIR/<run folder name>/."""
    keep_checkpoints: int = 3
    checkpoint_replay: bool = True
    """Include the replay buffer; without it a resumed run starts from an empty buffer
    (not exact)."""
    record_dataset: bool = False
    """Stream every transition the run collects to RUN_FOLDER/dataset/ between chunks:
    a Minari dataset (one compressed parquet shard per episode) with sparseq's
    manifest.json, for offline runs (--dataset.path RUN_FOLDER/dataset). Vector
    observations only; needs replay.capacity >= run.log_every + the longest episode."""
    wandb: WandbConfig = WandbConfig()


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation episodes on a separate pool, run on the host between chunks."""

    every: int = 0
    """Environment steps (gradient steps offline) between evaluations (run at the first log point past each
    multiple); 0 = no evaluation."""
    episodes: int = 10
    """Episodes per evaluation: the first ones to finish count."""
    max_steps: int = 125_000
    """Cap on agent steps per evaluation (all evaluation environments together);
    episodes still running at the cap are dropped."""
    epsilon: float = 0.001
    num_envs: int = 1
    video: bool = False
    """Also render `video_episodes` episodes of the evaluated policy (MuJoCo and DeepMind
    Control tasks; MUJOCO_GL=egl offscreen) to videos/eval-STEP.mp4 and to W&B. Without
    a working GL backend: one warning, the run goes on."""
    video_episodes: int = 1
    video_max_steps: int = 200
    """Agent steps per video episode: rendering costs ~0.1 s per frame on a CPU."""


@dataclass(frozen=True)
class ExplorationConfig:
    start: float = 1.0
    end: float = 0.01
    decay_steps: int = 1_000
    """Linear decay length in environment steps, after warm-up."""
    member_start: float = 0.0
    """Population learners (EauDeQN's eps_b option): probability at the end of warm-up
    of acting, at a given step, with a uniformly drawn online network instead of the
    selected one, so every network's behaviour is seen early. 0 with member_end 0: off."""
    member_end: float = 0.0
    """eps_b after member_decay_steps."""
    member_decay_steps: int = 100_000
    """Linear decay length of eps_b in environment steps, after warm-up."""


@dataclass(frozen=True)
class PipelineConfig:
    algorithm: str = "dqn"
    """Label used in reports (dqn, tfdqn, ...); the stages decide what runs."""
    python_path: tuple[str, ...] = ()
    """Folders searched for the modules of `module:Class` stage kinds that are not
    importable from sys.path (a pipeline file's folder is added when it needs it)."""
    run: RunConfig = RunConfig()
    env: EnvConfig = EnvConfig()
    network: NetworkConfig = NetworkConfig()
    learner: Stage = Stage("q", QLearnerOptions())
    """The learner: `kind` ("q", or module:Class) and that kind's options."""
    replay: ReplayConfig = ReplayConfig()
    dataset: DatasetConfig = DatasetConfig()
    """Offline runs: the dataset that takes the collector's place (the environments
    only evaluate); run.total_steps, log_every, checkpoint_every and operator periods
    then count gradient steps."""
    exploration: ExplorationConfig = ExplorationConfig()
    eval: EvalConfig = EvalConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    """Network analyses (srank, dormant neurons, churn, sparsity, weight norms) of the
    acting network every `analysis.every` steps."""
    operators: tuple[Stage, ...] = (Stage("target_sync", TargetSyncOptions()),)
    """Applied in this order after the gradient steps of every update cycle."""

    def operator(self, kind: str) -> Stage | None:
        """The only operator of `kind`, or None (ValueError if there are several)."""
        found = [op for op in self.operators if op.kind == kind]
        if len(found) > 1:
            raise ValueError(f"{len(found)} operators of kind {kind!r}")
        return found[0] if found else None
