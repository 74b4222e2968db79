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
    checkpoint_every: int = 0
    """Environment steps between checkpoints (and pool re-seeding boundaries, which make
    resume exact); 0 saves only at the end of the run."""
    checkpoint_dir: str = "checkpoints"
    """Checkpoints go to CHECKPOINT_DIR/<run folder name>/."""
    keep_checkpoints: int = 3
    checkpoint_replay: bool = True
    """Include the replay buffer; without it a resumed run starts from an empty buffer
    (not exact)."""
    wandb: WandbConfig = WandbConfig()


@dataclass(frozen=True)
class AtariConfig:
    """envpool Atari options (passed only to Atari tasks)."""

    repeat_action_probability: float = 0.25
    noop_max: int = 1
    """envpool 1.2.5 acts U{0..noop_max-1} + 1 - fire no-op frames at reset (fire = 1
    when use_fire_reset and the game has FIRE); 1 means no random no-op starts
    (docs/atari.md)."""
    frame_skip: int = 4
    stack_num: int = 4
    img_height: int = 84
    img_width: int = 84
    gray_scale: bool = True
    episodic_life: bool = False
    use_fire_reset: bool = False
    """Press FIRE once at reset; off in the Dopamine / Machado et al. protocol."""
    full_action_space: bool = False
    stack_padding: Literal["zeros", "repeat"] = "zeros"
    """Stack slots from before the episode start: zeros (Dopamine; the collector
    zeroes them) or copies of the first frame (envpool's own). Not an envpool option."""


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
    kind: Literal["mlp", "nature_cnn", "impala"] = "mlp"
    hidden: tuple[int, ...] = (100, 100)
    """MLP hidden layer sizes."""
    dense_units: int = 512
    """Nature CNN / IMPALA dense layer size."""
    impala_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of the IMPALA ResNet stacks (the iS-QL authors' 32-64-64; IMPALA's
    original is 16-32-32)."""
    iterations: int = 0
    """K, Bellman iterations learned at once (iS-QL): the output layer gets K + 1 heads
    [Q_bar_0, Q_1..Q_K], head k regressing on head k - 1 at s'. 0 = one head (DQN,
    TF-DQN). K >= 1 needs learner.target = "online" and operators.shared_target_shift."""
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
    online_forward: Literal["concat", "separate"] = "concat"
    """With target = "online" (TF-DQN, iS-QL): "concat" passes concat(s, s') through
    the network once (the iS-QL reference code); "separate" passes s' on its own under
    stop-gradient: same values and gradients for per-example layers, and the backward
    pass skips the s' half (about 2x cheaper for convolutional torsos on CPU)."""


@dataclass(frozen=True)
class ReplayConfig:
    capacity: int = 10_000
    batch_size: int = 32
    dedup_frames: Literal["auto", "on", "off"] = "auto"
    """Store each frame of stacked-frame observations once (FrameDedupReplay); auto =
    on for Atari tasks with grayscale or RGB frame stacks."""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation episodes on a separate pool, run on the host between chunks."""

    every: int = 0
    """Environment steps between evaluations (run at the first log point past each
    multiple); 0 = no evaluation."""
    episodes: int = 10
    """Episodes per evaluation: the first ones to finish count."""
    max_steps: int = 125_000
    """Cap on agent steps per evaluation (all evaluation environments together);
    episodes still running at the cap are dropped."""
    epsilon: float = 0.001
    num_envs: int = 1


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
class TargetSyncConfig:
    enabled: bool = True
    period: int = 200
    """Environment steps between hard target updates."""


@dataclass(frozen=True)
class SharedTargetShiftConfig:
    enabled: bool = False
    period: int = 200
    """T, environment steps between window shifts (head_i <- head_{i+1}, i < K)."""


@dataclass(frozen=True)
class PruneSelectConfig:
    """EauDeQN: K masked online networks against one shared target; at every target
    update (every operators.target_sync.period steps, in place of the plain sync) the
    network with the smallest summed loss becomes the target and the population is
    rebuilt from it at increasing sparsity."""

    enabled: bool = False
    num_networks: int = 4
    """K >= 2 online networks (the learner's population)."""
    max_prune_fraction: float = 0.2
    """rho in (0, 1): network k = 0..K-1 prunes k * rho / (K - 1) of the winner's
    remaining weights at every target update."""
    criterion: Literal["layer", "global"] = "layer"
    """Magnitude pruning per layer (each layer loses the same fraction) or global."""
    optimizer_state: Literal["copy", "reset"] = "copy"
    """copy: every network gets the winner's optimizer state, masked; reset: fresh."""
    horizon: float = 0.8
    """Fraction of run.total_steps after which sparsity is frozen."""


@dataclass(frozen=True)
class PolyPruneConfig:
    """PolyPruneQN: gradual magnitude pruning, s(t) = s_final (1 - (1 - p)^3) with
    p going from 0 at `start` to 1 at `end` (fractions of run.total_steps)."""

    enabled: bool = False
    start: float = 0.2
    end: float = 0.8
    final_sparsity: float = 0.95
    """s_final in [0, 1)."""
    every: int = 1_000
    """Gradient steps between mask recomputations."""
    criterion: Literal["layer", "global"] = "layer"


@dataclass(frozen=True)
class OperatorsConfig:
    target_sync: TargetSyncConfig = TargetSyncConfig()
    shared_target_shift: SharedTargetShiftConfig = SharedTargetShiftConfig()
    prune_select: PruneSelectConfig = PruneSelectConfig()
    poly_prune: PolyPruneConfig = PolyPruneConfig()


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
    eval: EvalConfig = EvalConfig()
    operators: OperatorsConfig = field(default_factory=OperatorsConfig)
