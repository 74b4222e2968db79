"""The pipeline-file schema: frozen dataclasses, one per TOML section.

The same classes are the CLI (`sparseq train PIPELINE --replay.batch-size 64`) and
the Python API (`build_pipeline(PipelineConfig(...))`). Defaults are DQN on
CartPole-v1 with the iS-QL paper's small-task settings.
"""

from dataclasses import dataclass, field
from typing import Literal


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
    total_steps: int = 100_000
    """Environment steps (all environments together)."""
    log_every: int = 5_000
    """Environment steps between log points (one jitted chunk each)."""
    out_dir: str = "runs"
    """Run folders go to OUT_DIR/NAME-TIME/."""
    loop: Literal["auto", "scan", "cycle"] = "auto"
    """scan: one jitted lax.scan per log point; cycle: one jitted call per update
    cycle (XLA:CPU runs convolutions ~10x slower inside loops); auto: cycle for
    convolutional networks on CPU, scan otherwise."""
    progress: bool = True
    wandb: WandbConfig = WandbConfig()


@dataclass(frozen=True)
class AtariConfig:
    """envpool Atari options (passed only to Atari tasks)."""

    repeat_action_probability: float = 0.25
    noop_max: int = 1
    """envpool draws 0..noop_max-1 no-ops at reset; 1 means no no-op starts."""
    frame_skip: int = 4
    stack_num: int = 4
    img_height: int = 84
    img_width: int = 84
    gray_scale: bool = True
    episodic_life: bool = False
    use_fire_reset: bool = True
    full_action_space: bool = False


@dataclass(frozen=True)
class EnvConfig:
    task_id: str = "CartPole-v1"
    num_envs: int = 1
    mode: Literal["xla", "host"] = "xla"
    """xla steps envpool inside the jitted loop; host steps through a callback."""
    max_episode_steps: int = 0
    """Episode cap in agent steps (a truncation); 0 keeps the task's default."""
    reward_clip: float = 0.0
    """Learning rewards clipped to [-c, c] when c > 0; returns always use raw rewards."""
    atari: AtariConfig = AtariConfig()


@dataclass(frozen=True)
class NetworkConfig:
    kind: Literal["mlp", "nature_cnn"] = "mlp"
    hidden: tuple[int, ...] = (100, 100)
    """MLP hidden layer sizes."""
    dense_units: int = 512
    """Nature CNN dense layer size."""
    layer_norm: bool = False
    """LayerNorm over features before each ReLU."""
    init: Literal["auto", "lecun_normal", "xavier_uniform", "torch_default"] = "auto"
    """auto: LeCun-normal for the MLP, Xavier-uniform for the CNN (the authors' choices)."""


@dataclass(frozen=True)
class LearnerConfig:
    target: Literal["network", "online"] = "network"
    """network: a separate target network (DQN); online: current parameters under
    stop-gradient (TF-DQN)."""
    gamma: float = 0.99
    n_step: int = 1
    learning_rate: float = 3e-4
    adam_eps: float = 1e-8
    loss: Literal["l2", "huber"] = "l2"
    update_every: int = 1
    """Environment steps per gradient step."""
    warmup: int = 1_000
    """Environment steps before the first gradient step."""


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 10_000
    batch_size: int = 32


@dataclass(frozen=True)
class ExplorationConfig:
    start: float = 1.0
    end: float = 0.01
    decay_steps: int = 1_000
    """Linear decay length in environment steps, after warm-up."""


@dataclass(frozen=True)
class TargetSyncConfig:
    enabled: bool = True
    period: int = 200
    """Environment steps between hard target updates."""


@dataclass(frozen=True)
class OperatorsConfig:
    target_sync: TargetSyncConfig = TargetSyncConfig()


@dataclass(frozen=True)
class PipelineConfig:
    algorithm: str = "dqn"
    """Label used in reports (dqn, tfdqn, ...); the sections decide what runs."""
    run: RunConfig = RunConfig()
    env: EnvConfig = EnvConfig()
    network: NetworkConfig = NetworkConfig()
    learner: LearnerConfig = LearnerConfig()
    replay: ReplayConfig = ReplayConfig()
    exploration: ExplorationConfig = ExplorationConfig()
    operators: OperatorsConfig = field(default_factory=OperatorsConfig)
