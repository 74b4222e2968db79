"""Exact resume: a run killed with SIGKILL after its first checkpoint and resumed with
`sparseq train --resume` ends with the same metrics.jsonl, episodes.csv and final
training state as a straight run; plus crash-safe saves, the NaN guard, and resume
errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import cli_env, sparseq_cli

STEPS = 1_200
FLAGS = [
    f"--run.total-steps={2 * STEPS}",
    f"--run.checkpoint-every={STEPS}",
    "--run.log-every=300",
    "--learner.warmup=200",
    "--replay.capacity=2000",
    "--network.hidden=32",
    "--no-run.progress",
    "--run.wandb.mode=disabled",
]


def _sparseq(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return sparseq_cli(cwd, *args, timeout=300)


def _final_arrays(checkpoints: Path) -> dict[str, np.ndarray]:
    import orbax.checkpoint as ocp

    last = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    with ocp.CheckpointManager(checkpoints.absolute(), item_names=("state", "meta")) as manager:
        restored = manager.restore(last, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return {k: np.asarray(v) for k, v in restored["state"].items()}


def _start(cwd: Path, name: str, pipeline: str, flags: list[str], **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sparseq.cli", "train", pipeline, f"--run.name={name}", *flags],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        **options,
    )


def _kill_after_first_checkpoint(cwd: Path, name: str, pipeline: str, flags: list[str]) -> Path:
    process = _start(cwd, name, pipeline, flags, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if list(cwd.glob(f"checkpoints/{name}-*/{STEPS}")) or process.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (folder,) = cwd.glob(f"runs/{name}-*")
    assert list(cwd.glob(f"checkpoints/{name}-*/{STEPS}")), "the first checkpoint was never written"
    assert not list(cwd.glob(f"checkpoints/{name}-*/{2 * STEPS}")), "the run finished before it was killed"
    return folder


# EauDeDQN also acts with randomly drawn members (eps_b), whose draws must resume too.
MEMBER_EXPLORATION = ["--exploration.member-start=1.0", "--exploration.member-decay-steps=2000"]


# Sparse iS-DQN covers the iterated heads, the population and its selections at once;
# the network analyses' churn probe (drawn at step 1,100 for the analysis at 1,500) rides
# in the checkpoint at 1,200 that the killed run resumes from.
ANALYSIS = ["--analysis.every=1500", "--analysis.churn-period=400", "--analysis.states=64"]


@pytest.mark.parametrize(
    ("pipeline", "extra"),
    [
        ("dqn-cartpole", []),
        ("eaudeisdqn-cartpole", [*MEMBER_EXPLORATION, *ANALYSIS]),
        # overlapped: the straight run and the resume both size XLA's pool to one thread
        ("dqn-cartpole", ["--learner.overlap=true"]),
    ],
)
def test_sigkill_and_resume_equals_straight_run(tmp_path, pipeline, extra):
    if not (Path(__file__).parents[1] / "pipelines" / f"{pipeline}.toml").exists():
        pytest.fail(f"pipelines/{pipeline}.toml is missing")
    flags = [*FLAGS, *extra]
    straight = _sparseq(tmp_path, "train", pipeline, "--run.name=straight", *flags)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = _kill_after_first_checkpoint(tmp_path, "killed", pipeline, flags)
    resumed = _sparseq(tmp_path, "train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (reference,) = tmp_path.glob("runs/straight-*")
    for name in ("metrics.jsonl", "episodes.csv"):
        assert (killed / name).read_text() == (reference / name).read_text(), name
    assert len((reference / "metrics.jsonl").read_text().splitlines()) == 2 * STEPS // 300
    assert ("train/member_epsilon" in (reference / "metrics.jsonl").read_text()) == (MEMBER_EXPLORATION[0] in extra)
    assert ('"analysis/churn_steps": 400' in (reference / "metrics.jsonl").read_text()) == (ANALYSIS[0] in extra)
    a = _final_arrays(next(tmp_path.glob("checkpoints/straight-*")))
    b = _final_arrays(next(tmp_path.glob("checkpoints/killed-*")))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_several_boundaries_with_the_compilation_cache_resume_exactly(tmp_path):
    """Three checkpoint boundaries, the persistent compilation cache on (a folder of
    its own, filled by the straight run and read by the others): killed with SIGKILL
    after the second boundary and resumed, the run ends as the straight run does."""
    cache = tmp_path / "cache"
    env = {**cli_env(), "SPARSEQ_COMPILATION_CACHE": str(cache)}
    flags = [f"--run.total-steps={3 * STEPS}" if f.startswith("--run.total-steps") else f for f in FLAGS]
    command = [sys.executable, "-m", "sparseq.cli", "train", "dqn-cartpole", *flags]
    straight = subprocess.run([*command, "--run.name=straight"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert list(cache.iterdir()), "the compilation cache stayed empty"
    process = subprocess.Popen(
        [*command, "--run.name=killed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None:
            if list(tmp_path.glob(f"checkpoints/killed-*/{2 * STEPS}")):
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not list(tmp_path.glob(f"checkpoints/killed-*/{3 * STEPS}")), "the run finished before it was killed"
    (killed,) = tmp_path.glob("runs/killed-*")
    resumed = subprocess.run(
        [sys.executable, "-m", "sparseq.cli", "train", "--resume", str(killed)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"from step {2 * STEPS:,}" in resumed.stderr
    (reference,) = tmp_path.glob("runs/straight-*")
    for name in ("metrics.jsonl", "episodes.csv"):
        assert (killed / name).read_text() == (reference / name).read_text(), name
    a = _final_arrays(next(tmp_path.glob("checkpoints/straight-*")))
    b = _final_arrays(next(tmp_path.glob("checkpoints/killed-*")))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


SIGNAL_FLAGS = [
    "--run.total-steps=8000",
    "--run.log-every=2000",
    "--run.chunk-seconds=0.2",
    "--learner.warmup=200",
    "--replay.capacity=2000",
    "--network.hidden=32",
    "--no-run.progress",
    "--run.wandb.mode=disabled",
]


def _signal_midway(cwd: Path, name: str, pipeline: str, flags: list[str], sig: int, after: str) -> Path:
    """Starts a run, sends `sig` once a file matching `after` (a glob with {name}) is
    written, waits for the run to stop."""
    process = _start(cwd, name, pipeline, flags, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        found = list(cwd.glob(after.format(name=name)))
        if found and (found[0].is_dir() or found[0].read_text().strip()):
            break
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    (folder,) = cwd.glob(f"runs/{name}-*")
    return folder


@pytest.mark.parametrize(
    ("pipeline", "sig", "extra", "after"),
    [
        # Between the start and the first boundary (the end), after the first log line.
        ("dqn-cartpole", signal.SIGINT, [], "runs/{name}-*/metrics.jsonl"),
        # After the boundary at step 4000 (pool re-created with its own seed).
        (
            "eaudedqn-cartpole",
            signal.SIGINT,
            ["--run.checkpoint-every=4000", *MEMBER_EXPLORATION],
            "checkpoints/{name}-*/4000",
        ),
    ],
)
def test_signal_and_resume_from_elsewhere_equals_straight_run(tmp_path, pipeline, sig, extra, after):
    """A stop between boundaries adds none: the checkpoint keeps the actions since the
    last boundary and the resumed run (started in another working directory) steps a
    fresh pool through them, so every output equals the straight run's."""
    flags = [*SIGNAL_FLAGS, *extra]
    straight = _sparseq(tmp_path, "train", pipeline, "--run.name=straight", *flags)
    assert straight.returncode == 0, straight.stderr[-2000:]
    stopped = _signal_midway(tmp_path, "stopped", pipeline, flags, sig, after)
    (checkpoints,) = tmp_path.glob("checkpoints/stopped-*")
    steps = sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert steps and steps[-1] < 8000, steps
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = _sparseq(elsewhere, "train", "--resume", str(stopped))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (elsewhere / "checkpoints").exists() and not (elsewhere / "runs").exists()
    (reference,) = tmp_path.glob("runs/straight-*")
    for name in ("metrics.jsonl", "episodes.csv"):
        assert (stopped / name).read_text() == (reference / name).read_text(), name
    a = _final_arrays(next(tmp_path.glob("checkpoints/straight-*")))
    b = _final_arrays(checkpoints)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["segments"] == 2 and summary["env_steps"] == 8000
    record = json.loads((stopped / "run.json").read_text())
    assert [s.get("from_step") for s in record["segments"]] == [None, steps[-1]]
    assert record["software"]["packages"]["jax"] and record["software"]["sparseq"]


def test_resume_extends_a_run_with_schedules_in_absolute_steps(tmp_path):
    """A longer total_steps on resume keeps PolyPrune's window where it was (fractions
    of the first segment's total), and pipeline.toml records the new total."""
    flags = ["--run.total-steps=1000", "--run.log-every=250", "--learner.warmup=100", "--network.hidden=32"]
    flags += [
        "--replay.capacity=1000",
        "--operators.poly_prune.every=50",
        "--no-run.progress",
        "--run.wandb.mode=disabled",
    ]
    first = _sparseq(tmp_path, "train", "polyprunedqn-cartpole", "--run.name=p", *flags)
    assert first.returncode == 0, first.stderr[-2000:]
    (folder,) = tmp_path.glob("runs/p-*")
    summary_before = (folder / "summary.json").read_text()
    again = _sparseq(tmp_path, "train", "--resume", str(folder))
    assert again.returncode == 0 and "already finished at step 1,000" in again.stderr, again.stderr[-2000:]
    assert (folder / "summary.json").read_text() == summary_before
    longer = _sparseq(tmp_path, "train", "--resume", str(folder), "--run.total-steps=2000")
    assert longer.returncode == 0, longer.stderr[-2000:]
    pipeline_toml = (folder / "pipeline.toml").read_text()
    assert "total_steps = 2000" in pipeline_toml and "schedule_steps = 1000" in pipeline_toml
    assert "# resumed at step 1000: run.total_steps 1000 -> 2000" in pipeline_toml
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    sparsity = {line["env_steps"]: line["sparsity/overall"] for line in lines}
    assert sparsity[1000] == pytest.approx(sparsity[2000], abs=1e-6)  # the window ended at 800
    assert json.loads((folder / "summary.json").read_text())["env_steps"] == 2000


def test_interrupted_save_keeps_previous_checkpoint(tmp_path):
    writer = f"""
import sys, numpy as np, jax, equinox as eqx
sys.path.insert(0, {str(Path(__file__).parents[1] / "src")!r})
import orbax.checkpoint as ocp
from pathlib import Path
manager = ocp.CheckpointManager(Path({str(tmp_path / "ck")!r}), item_names=("state", "meta"))
def save(step, size):
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({{"w": np.full(size, step, np.float32)}}),
                                               meta=ocp.args.JsonSave({{"step": step}})))
save(1, 10)
manager.wait_until_finished()
print("first", flush=True)
save(2, 150_000_000)
manager.wait_until_finished()
print("second", flush=True)
"""
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, env=cli_env())
    assert process.stdout.readline().strip() == "first"
    deadline = time.time() + 60
    while time.time() < deadline and not any("2" in p.name for p in (tmp_path / "ck").iterdir()):
        time.sleep(0.01)
    process.kill()
    process.wait()
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager((tmp_path / "ck").absolute(), item_names=("state", "meta")) as manager:
        assert manager.latest_step() == 1
        restored = manager.restore(1, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    np.testing.assert_array_equal(restored["state"]["w"], np.full(10, 1, np.float32))


def test_nan_loss_stops_with_step_and_stage_and_keeps_checkpoint(make_config):
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax

    from sparseq.pipeline.config.build import build_pipeline
    from sparseq.runs.checkpoint import Checkpointer
    from sparseq.runs.runner import NonFiniteError, checkpoint_folder, train

    config = make_config(run={"total_steps": 800, "log_every": 100, "checkpoint_every": 200})
    pipeline = build_pipeline(config)
    # Updates are fine for 240 gradient steps (warm-up 50: up to env step 290), then NaN.
    poison = optax.scale_by_schedule(lambda count: jnp.where(count < 240, 1.0, jnp.nan))
    poisoned = dataclasses.replace(
        pipeline, learner=dataclasses.replace(pipeline.learner, optimizer=optax.chain(optax.adam(1e-3), poison))
    )
    folder = Path(config.run.out_dir) / "nan"
    with pytest.raises(NonFiniteError) as error:
        train(config, folder=folder, pipeline=poisoned)
    message = str(error.value)
    assert message == (
        "non-finite loss at environment step 291 (stage: learner update); last good checkpoint: step 200"
    )
    checkpointer = Checkpointer(checkpoint_folder(config, folder))
    assert checkpointer.all_steps() == [200]
    template = poisoned.init(jax.random.key(0))
    restored, _ = checkpointer.restore(200, template, checkpointer.read_meta(200))
    assert int(restored.env_steps) == 200
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(restored.learner.online))
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from sparseq.cli import main

    monkeypatch.chdir(tmp_path)

    def cli(*args: str) -> tuple[int, str]:
        """The CLI in-process: its own error reporting, without a start-up per case."""
        code = main(list(args))
        return code, capsys.readouterr().err

    code, err = cli("train", "--resume", "runs/nope")
    assert code == 2
    assert err.strip().splitlines() == ["sparseq: error: runs/nope: run folder not found"]
    code, err = cli(
        "train",
        "dqn-cartpole",
        "--run.name=a",
        *FLAGS[:1],
        "--run.total-steps=600",
        "--learner.warmup=200",
        "--no-run.progress",
        "--run.wandb.mode=disabled",
    )
    assert code == 0, err[-1500:]
    (folder,) = tmp_path.glob("runs/a-*")
    code, err = cli("train", "--resume", str(folder), "--learner.gamma=0.5")
    assert code == 2
    assert "learner.gamma 0.99 -> 0.5" in err and len(err.strip().splitlines()) == 1
    edited = folder / "pipeline.toml"
    edited.write_text(edited.read_text().replace("learning_rate = 0.0003", "learning_rate = 0.001"))
    code, err = cli("train", "--resume", str(folder))
    assert code == 2
    assert "changed since the checkpoint" in err and "learner.learning_rate 0.0003 -> 0.001" in err
    (ckpt,) = tmp_path.glob("checkpoints/a-*")
    for step in ckpt.iterdir():
        for item in step.rglob("*"):
            if item.is_file():
                item.write_bytes(b"garbage")
    edited.write_text(edited.read_text().replace("learning_rate = 0.001", "learning_rate = 0.0003"))
    code, err = cli("train", "--resume", str(folder))
    assert code == 2
    assert "unreadable checkpoint" in err and len(err.strip().splitlines()) == 1
