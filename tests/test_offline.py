"""Offline RL: the CQL loss by hand, a recorded run's Minari dataset against its replay,
offline CQL learning CartPole from a recording, exact resume of a recording and of an
offline run after SIGKILL, a synthetic DQN Replay dataset through the Atari pipeline,
and the one-line errors."""

import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.conftest import REPO, sparseq_cli
from tests.test_resume import STEPS, _final_arrays, _kill_after_first_checkpoint, _start

from sparseq.pipeline.config import load_pipeline
from sparseq.pipeline.config.build import build_pipeline, learner_for_shapes
from sparseq.pipeline.offline import OfflinePipeline
from sparseq.runs.runner import train
from sparseq.stages.datasets.minari_format import read_minari
from sparseq.stages.datasets.stream import Stream, stream_to_episodes
from sparseq.stages.learners.losses import cql_gaps
from sparseq.types import Batch


def test_cql_gaps_by_hand():
    q = jnp.asarray([[[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]])  # (B=2, H=1, A=3)
    action = jnp.asarray([2, 0])
    expected = ((np.log(np.exp(1) + np.exp(2) + np.exp(3)) - 3.0) + (np.log(3.0) - 0.0)) / 2
    np.testing.assert_allclose(np.asarray(cql_gaps(q, action)), [expected], rtol=1e-6)


def test_cql_adds_alpha_times_the_gap_to_the_td_loss():
    config = load_pipeline("offline-cql-cartpole", ["--dataset.path=unused"])[0]
    base = learner_for_shapes(config, (4,), 2)
    assert base.cql_alpha == 0.1  # the pipeline's setting reaches the learner
    state = base.init(jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (8, 4))
    batch = Batch(obs, jnp.arange(8) % 2, jnp.ones(8), jnp.full(8, 0.99), obs[::-1])
    no_cql = dataclasses.replace(base, cql_alpha=0.0)
    td = float(no_cql.update(state, batch)[1]["loss"][0])
    _, metrics = dataclasses.replace(base, cql_alpha=0.5).update(state, batch)
    network = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, state.online)
    q = network.batched(obs)  # (B, 1, A)
    chosen = np.asarray(q)[np.arange(8), 0, np.asarray(batch.action)]
    gap = float(np.mean(np.log(np.exp(np.asarray(q)[:, 0]).sum(-1)) - chosen))
    np.testing.assert_allclose(float(metrics["cql_gap"][0]), gap, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"][0]), td + 0.5 * gap, rtol=1e-5)


def _replay_episodes(replay, state) -> list:
    """Every stream's complete episodes, read straight from a final replay state."""
    count = int(state.count)
    rows = np.arange(count) % replay.slots
    episodes = []
    for e in range(replay.num_envs):
        stream = Stream(*(np.asarray(getattr(state, k))[rows, e] for k in Stream._fields))
        episodes += stream_to_episodes(stream)
    return episodes


def _key(episode) -> tuple:
    return (len(episode.rewards), tuple(np.asarray(episode.observations[0]).round(6)))


def test_recorded_dataset_round_trips_through_minari(make_config):
    """Two environments, two boundaries: the dataset holds exactly the replay's episodes
    (those a boundary cut end truncated), and minari itself reads it."""
    import minari

    config = make_config(
        run={"total_steps": 1_200, "checkpoint_every": 600, "record_dataset": True},
        env={"num_envs": 2},
        replay={"capacity": 4_000, "batch_size": 8},
    )
    result = train(config, name="record")
    spec, recorded = read_minari(str(result.folder / "dataset"))
    expected = _replay_episodes(
        result.pipeline.replay if hasattr(result, "pipeline") else build_pipeline(config).replay, result.state.replay
    )
    assert spec.task_id == "CartPole-v1" and spec.num_actions == 2 and spec.obs_shape == (4,)
    assert sorted(map(_key, recorded)) == sorted(map(_key, expected)) and len(recorded) == len(expected)
    by_key = {_key(e): e for e in expected}
    for episode in recorded:
        twin = by_key[_key(episode)]
        for a, b in zip(episode, twin, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(e.truncations[-1] for e in recorded) and any(e.terminations[-1] for e in recorded)
    dataset = minari.MinariDataset(result.folder / "dataset" / "data")
    assert dataset.total_episodes == len(recorded) and dataset.total_steps == sum(len(e.rewards) for e in recorded)
    manifest = json.loads((result.folder / "dataset" / "manifest.json").read_text())
    assert manifest["steps"] == dataset.total_steps and manifest["pipeline"]["run"]["record_dataset"] is True


@pytest.fixture(scope="module")
def cartpole_dataset(tmp_path_factory) -> Path:
    """A recording of 30,000 steps of DQN on CartPole-v1 (the shipped pipeline)."""
    cwd = tmp_path_factory.mktemp("record")
    done = sparseq_cli(
        cwd,
        "train",
        "dqn-cartpole",
        "--run.total-steps=30000",
        "--run.record-dataset",
        "--no-run.progress",
        "--run.name=source",
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (folder,) = cwd.glob("runs/source-*/dataset")
    return folder


def test_offline_cql_learns_cartpole_from_a_recording(cartpole_dataset, tmp_path):
    flags = [
        f"--dataset.path={cartpole_dataset}",
        "--run.total-steps=14000",
        "--run.log-every=2000",
        "--eval.every=2000",
        "--learner.cql-alpha=1.0",
        "--no-run.progress",
        "--run.name=cql",
    ]
    done = sparseq_cli(tmp_path, "train", "offline-cql-cartpole", *flags, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder,) = tmp_path.glob("runs/cql-*")
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["gradient_steps"] for r in records] == list(range(2000, 14001, 2000))
    assert all("train/return_recent" not in r for r in records)
    last = [r["eval/return_mean"] for r in records[-2:]]
    assert np.mean(last) >= 150, last
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["gradient_steps"] == 14000 and summary["eval_return_last"] == last[-1]
    assert (folder / "returns.png").stat().st_size > 0 and (folder / "policy.eqx").exists()


def _straight_and_killed_then_resumed(tmp_path: Path, pipeline: str, flags: list[str], monkeypatch, capsys):
    """A straight run in a process of its own while another is SIGKILLed after its
    first checkpoint and resumed in this process; returns (resumed, straight) folders."""
    from sparseq.cli import main

    straight = _start(tmp_path, "straight", pipeline, flags, stderr=(tmp_path / "straight.err").open("w"))
    try:
        killed = _kill_after_first_checkpoint(tmp_path, "killed", pipeline, flags)
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
        assert main(["train", "--resume", str(killed)]) == 0, capsys.readouterr().err[-2000:]
        assert straight.wait(timeout=300) == 0, (tmp_path / "straight.err").read_text()[-2000:]
    finally:
        if straight.poll() is None:
            straight.kill()
    (reference,) = tmp_path.glob("runs/straight-*")
    return killed, reference


def test_offline_sigkill_and_resume_equals_straight_run(cartpole_dataset, tmp_path, monkeypatch, capsys):
    flags = [
        f"--dataset.path={cartpole_dataset}",
        f"--run.total-steps={2 * STEPS}",
        f"--run.checkpoint-every={STEPS}",
        "--run.log-every=300",
        "--eval.every=600",
        "--eval.episodes=2",
        "--no-run.progress",
        "--run.wandb.mode=disabled",
    ]
    killed, reference = _straight_and_killed_then_resumed(
        tmp_path, "offline-eaudecql-cartpole", flags, monkeypatch, capsys
    )
    strip = lambda text: [  # noqa: E731  (evaluation pools differ after a resume: training does not)
        {k: v for k, v in json.loads(line).items() if not k.startswith("eval/")} for line in text.splitlines()
    ]
    assert strip((killed / "metrics.jsonl").read_text()) == strip((reference / "metrics.jsonl").read_text())
    assert (killed / "selections.csv").read_text() == (reference / "selections.csv").read_text()
    a = _final_arrays(next(tmp_path.glob("checkpoints/straight-*")))
    b = _final_arrays(next(tmp_path.glob("checkpoints/killed-*")))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_recording_sigkill_and_resume_equals_straight_run(tmp_path, monkeypatch, capsys):
    """The killed run's shards past its checkpoint are dropped on resume, and the
    dataset ends up the straight run's, shard for shard."""
    flags = [
        f"--run.total-steps={2 * STEPS}",
        f"--run.checkpoint-every={STEPS}",
        "--run.log-every=300",
        "--run.record-dataset",
        "--learner.warmup=200",
        "--no-run.progress",
        "--run.wandb.mode=disabled",
    ]
    killed, reference = _straight_and_killed_then_resumed(tmp_path, "dqn-cartpole", flags, monkeypatch, capsys)
    _, a = read_minari(str(reference / "dataset"))
    _, b = read_minari(str(killed / "dataset"))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)


def test_dqn_replay_dataset_through_the_atari_pipeline(tmp_path):
    """A synthetic run folder in the DQN Replay layout trains offline CQL on Pong's
    Nature CNN: 84x84 frames rebuilt into (4, 84, 84) stacks by the dedup replay."""
    from sparseq.stages.datasets.dqn_replay import write_dqn_replay

    rng = np.random.default_rng(0)
    n = 64
    terminals = np.zeros(n, np.uint8)
    terminals[[20, 45]] = 1
    write_dqn_replay(
        tmp_path / "replay_logs",
        0,
        rng.integers(0, 255, (n, 84, 84), dtype=np.uint8),
        rng.integers(0, 6, n).astype(np.int32),
        rng.standard_normal(n).astype(np.float32),
        terminals,
    )
    flags = [
        f"--dataset.path={tmp_path / 'replay_logs'}",
        "--dataset.no-skip-padding",
        "--eval.every=0",
        "--network.dense-units=32",
        "--replay.batch-size=4",
    ]
    config = load_pipeline("offline-cql-atari", flags)[0]
    pipeline = build_pipeline(config)
    assert isinstance(pipeline, OfflinePipeline) and pipeline.source.spec.stack_num == 4
    state = pipeline.init(jax.random.key(0))
    assert state.replay.frames.shape[1:] == (1, 1, 84, 84)  # single frames, not stacks
    state, metrics = jax.jit(pipeline.cycle)(state)
    assert int(state.gradient_steps) == 1 and np.isfinite(np.asarray(metrics["loss"])).all()
    assert float(metrics["cql_gap"][0]) > 0


def test_offline_bad_input_is_one_line(cartpole_dataset, tmp_path, monkeypatch, capsys):
    from sparseq.cli import main

    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(cartpole_dataset, broken)
    shard = broken / "data" / "3" / "part-0.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    cases = {
        ("offline-cql-cartpole",): "an offline pipeline needs --dataset.path",
        ("offline-cql-cartpole", "--dataset.path=nowhere"): "nowhere: no dataset there",
        ("offline-cql-lunarlander", f"--dataset.path={cartpole_dataset}"): "observation shape is (4,), the task",
        ("offline-cql-cartpole", f"--dataset.path={broken}"): "data/3/part-0.parquet: truncated or corrupt",
        ("offline-cql-cartpole", f"--dataset.path={cartpole_dataset}", "--run.record-dataset"): "records online runs",
        ("dqn-atari", "--run.record-dataset"): "Atari frame stacks are not recorded",
    }
    for args, message in cases.items():  # in-process: the CLI's own error reporting, without a start-up each
        code = main(["train", *args, "--run.total-steps=10", "--run.wandb.mode=disabled"])
        stderr = capsys.readouterr().err
        assert code != 0 and message in stderr, (args, stderr[-1500:])
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not list(tmp_path.glob("runs/*"))  # nothing was written for a run that never started
