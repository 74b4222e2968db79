"""Continuous control, integration level: every continuous pipeline file builds, a short
SAC run on InvertedPendulum-v5 learns, and a SAC run killed with SIGKILL after its first
checkpoint and resumed ends exactly like a straight run."""

import equinox as eqx
import jax
import numpy as np
import pytest
from tests.conftest import REPO
from tests.test_resume import STEPS, _final_arrays, _kill_after_first_checkpoint, _start

from sparseq.pipeline.config import load_pipeline
from sparseq.pipeline.config.build import build_pipeline
from sparseq.runs.periodic_eval import Evaluator
from sparseq.runs.runner import ChunkRunner, summarize_chunk
from sparseq.stages.operators import Polyak, PolyPrune, PruneSelect, SharedTargetShift
from sparseq.stages.operators.match_sparsity import MatchSparsity

# ---------------------------------------------------------------- every continuous pipeline builds

# What each family of continuous pipeline files holds: operator kinds in order,
# critic population, heads per critic, BatchNorm, a target critic, critic / actor masks.
FAMILIES = {
    "sac": ([Polyak], 1, 1, False, True, False, False),
    "crossq": ([], 1, 1, True, False, False, False),
    "issac": ([SharedTargetShift], 1, 2, True, False, False, False),
    "eaudesac": ([Polyak, PruneSelect, MatchSparsity], 3, 1, False, True, True, True),
    "polyprunesac": ([PolyPrune, PolyPrune, Polyak], 1, 1, False, True, True, True),
}
CONTINUOUS = sorted(p.stem for p in (REPO / "pipelines").glob("*.toml") if p.stem.split("-")[0] in FAMILIES)


def test_the_continuous_pipelines_are_all_there():
    assert len(CONTINUOUS) >= 12, CONTINUOUS
    for family in FAMILIES:
        assert {f"{family}-halfcheetah", f"{family}-hopper"} <= set(CONTINUOUS), family


@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_pipeline_builds_and_initialises(name):
    operators, population, heads, batch_norm, has_target, masked, actor_masked = FAMILIES[name.split("-")[0]]
    config = load_pipeline(name)[0]
    assert config.learner.kind == "sac"
    pipeline = build_pipeline(config)
    collector = pipeline.collector
    assert collector.continuous and len(collector.action_shape) == 1
    assert [type(op) for op in pipeline.operators] == operators
    assert config.network.batch_norm == batch_norm
    # The whole initialisation traced (operator checks included), no numbers computed:
    # the shipped networks are 256 wide and computing them eagerly is what is slow.
    state = eqx.filter_eval_shape(pipeline.init, jax.random.key(0))
    critic = state.learner.critic
    obs_features = int(np.prod(collector.obs_shape))
    weight = critic.online.twins.layers[0].weight
    assert weight.shape == (population, 2, config.network.hidden[0], obs_features + collector.action_shape[0])
    assert critic.online.twins.head.linear.weight.shape[:3] == (population, 2, heads)
    assert (critic.target is not None) == has_target
    assert (critic.masks is not None) == masked and (state.learner.actor.masks is not None) == actor_masked
    assert len(state.operators) == len(operators)
    assert all(op.on in ("critic", "actor") for op in pipeline.operators)


# ---------------------------------------------------------------- a short run learns

LEARN_STEPS = 4_000
WARMUP = 1_000
LEARN_FLAGS = [
    "--env.task-id=InvertedPendulum-v5",
    f"--run.total-steps={LEARN_STEPS}",
    f"--learner.warmup={WARMUP}",
    "--eval.every=0",
    "--network.hidden=64,64",
    "--learner.actor-hidden=64,64",
    "--replay.batch-size=128",
    "--run.seed=0",
]
WINDOW = 20
FLOOR = 25.0  # measured: random actions ~5 per episode; this run ~70 after 3,000 updates


def test_sac_learns_inverted_pendulum_in_a_few_thousand_steps(tmp_path):
    config = load_pipeline("sac-halfcheetah", LEARN_FLAGS)[0]
    pipeline = build_pipeline(config)
    state = pipeline.init(jax.random.key(config.run.seed))
    per_cycle = pipeline.steps_per_cycle
    total = LEARN_STEPS // per_cycle
    first_learning = next(c for c in range(total) if pipeline.learns_in_cycle(c))
    chunk = 1_000
    runner = ChunkRunner(pipeline, "scan", max_cycles=max(chunk, first_learning))
    random_returns: list[float] = []
    returns: list[float] = []
    cycle = 0
    while cycle < total:
        learning = cycle >= first_learning
        end = first_learning if not learning else min(cycle + chunk, total)
        state, metrics, _ = runner(state, learning, end - cycle)
        cycle = end
        episodes = [r for _, r, _ in summarize_chunk(metrics)[1]]
        (returns if learning else random_returns).extend(episodes)
    assert len(random_returns) >= WINDOW and len(returns) >= WINDOW
    random_mean, recent = float(np.mean(random_returns)), float(np.mean(returns[-WINDOW:]))
    print(f"InvertedPendulum-v5: uniform random actions {random_mean:.1f}, last {WINDOW} episodes {recent:.1f}")
    assert recent > max(3 * random_mean, FLOOR), (random_mean, recent)
    assert int(state.learner.critic.updates) == total - first_learning  # one update per step from the warm-up's end
    # [eval] video: the evaluated (mean-action) policy rendered to videos/eval-STEP.mp4.
    video_config = load_pipeline(
        "sac-halfcheetah", [*LEARN_FLAGS[:3], "--eval.every=1000", "--eval.video=true", "--eval.video-max-steps=12"]
    )[0]
    video = Evaluator(video_config, pipeline.learner).record_video(state.learner, LEARN_STEPS, tmp_path)
    assert video is not None and video.path == tmp_path / "videos" / f"eval-{LEARN_STEPS}.mp4"
    assert video.path.stat().st_size > 0 and video.frames == 12 and video.episode_returns == [12.0]


# ---------------------------------------------------------------- SIGKILL and resume

RESUME_FLAGS = [
    "--env.task-id=InvertedPendulum-v5",
    f"--run.total-steps={2 * STEPS}",
    f"--run.checkpoint-every={STEPS}",
    "--run.log-every=300",
    "--learner.warmup=200",
    "--replay.capacity=2000",
    "--replay.batch-size=32",
    "--network.hidden=32,32",
    "--learner.actor-hidden=32,32",
    "--eval.every=0",
    "--no-run.progress",
    "--run.wandb.mode=disabled",
]


def test_sac_sigkill_and_resume_equals_straight_run(tmp_path, monkeypatch, capsys):
    """tests/test_resume.py's check for SAC: the straight run goes on in a process of
    its own while the killed one is started, killed and resumed (in this process)."""
    from sparseq.cli import main

    pipeline = "sac-halfcheetah"
    straight_log = tmp_path / "straight.stderr"
    with straight_log.open("w") as stderr:
        straight = _start(tmp_path, "straight", pipeline, RESUME_FLAGS, stderr=stderr)
        try:
            killed = _kill_after_first_checkpoint(tmp_path, "killed", pipeline, RESUME_FLAGS)
            monkeypatch.chdir(tmp_path)
            monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
            assert main(["train", "--resume", str(killed)]) == 0, capsys.readouterr().err[-2000:]
            assert straight.wait(timeout=300) == 0, straight_log.read_text()[-2000:]
        finally:
            if straight.poll() is None:
                straight.kill()
                straight.wait()
    (reference,) = tmp_path.glob("runs/straight-*")
    for name in ("metrics.jsonl", "episodes.csv"):
        assert (killed / name).read_text() == (reference / name).read_text(), name
    assert len((reference / "metrics.jsonl").read_text().splitlines()) == 2 * STEPS // 300
    assert "train/actor_loss" in (reference / "metrics.jsonl").read_text()
    a = _final_arrays(next(tmp_path.glob("checkpoints/straight-*")))
    b = _final_arrays(next(tmp_path.glob("checkpoints/killed-*")))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
