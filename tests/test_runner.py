"""The runner: a run folder with the resolved pipeline, metrics.jsonl at every log
point, episodes, plot and summary; the scan and per-cycle loops agree; the loop is
chosen per backend and network; chunks are donated; W&B offline by default and never
fatal; the Nature-CNN (Atari) pipeline runs end to end."""

import dataclasses
import json
import os
import signal
import warnings

import equinox as eqx
import jax
import numpy as np
import pytest

from sparseq.pipeline.config import load_pipeline
from sparseq.pipeline.config.build import build_pipeline
from sparseq.pipeline.config.schema import WandbConfig
from sparseq.runs.log import WandbLog
from sparseq.runs.runner import ChunkRunner, loop_kind, summarize_chunk, train


def read_metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def read_episodes(folder):
    rows = (folder / "episodes.csv").read_text().splitlines()
    assert rows[0] == "env_steps,episode_return,episode_length"
    return np.asarray([[float(x) for x in row.split(",")] for row in rows[1:]])


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory):
    from conftest import small_config

    config = small_config(tmp_path_factory.mktemp("scan") / "runs", run={"loop": "scan", "total_steps": 400})
    return config, train(config, name="scan")


def test_run_folder_contents(scan_run):
    config, result = scan_run
    folder = result.folder
    assert folder.parent.as_posix() == config.run.out_dir and folder.name.startswith("scan-")
    assert load_pipeline(folder / "pipeline.toml")[0] == config
    metrics = read_metrics(folder)
    assert [m["env_steps"] for m in metrics] == [100, 200, 300, 400]
    # warm-up ends at 50 steps: 51 updates in the first chunk (cycles 49..99), then 100 per chunk
    assert [m["train/updates"] for m in metrics] == [51, 100, 100, 100]
    episodes = read_episodes(folder)
    assert sum(m["train/episodes"] for m in metrics) == len(episodes) > 5
    # CartPole: reward 1 per step, so every return equals its length
    np.testing.assert_array_equal(episodes[:, 1], episodes[:, 2])
    assert (np.diff(episodes[:, 0]) >= 0).all() and episodes[:, 0].max() <= 400
    assert (folder / "returns.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["env_steps"] == 400 and summary["episodes"] == len(episodes)
    assert summary["loop"] == "scan" and summary["online_parameters"] == (4 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2)
    assert int(result.state.env_steps) == 400 and int(result.state.learner.updates) == 351


def test_train_updates_counts_gradient_steps_with_several_envs(make_config):
    """4 environments with update_every 1: 4 gradient steps per cycle, all counted."""
    config = make_config(env={"num_envs": 4}, run={"total_steps": 2000, "log_every": 500})
    result = train(config, name="four")
    logged = sum(m["train/updates"] for m in read_metrics(result.folder))
    assert logged == int(result.state.learner.updates) > 1500


def test_python_config_is_validated_before_any_folder(tmp_path, make_config):
    from sparseq.pipeline.config.errors import ConfigError
    from sparseq.pipeline.config.schema import NetworkConfig, PipelineConfig, ReplayConfig

    out = tmp_path / "python-runs"
    run = dataclasses.replace(make_config().run, out_dir=str(out))
    with pytest.raises(ConfigError, match=r"^config: replay.batch_size = 0: must be > 0$"):
        train(PipelineConfig(run=run, replay=ReplayConfig(batch_size=0)))
    with pytest.raises(ConfigError, match=r"^config: network.hidden = '64': must be a list of int$"):
        train(PipelineConfig(run=run, network=NetworkConfig(hidden="64")))
    assert not out.exists()


def test_cycle_loop_matches_the_scan_loop(scan_run, make_config):
    config, scanned = scan_run
    run = dataclasses.replace(config.run, loop="cycle", out_dir=make_config().run.out_dir)
    cycled = train(dataclasses.replace(config, run=run), name="cycle")
    np.testing.assert_array_equal(read_episodes(cycled.folder), read_episodes(scanned.folder))
    for a, b in zip(jax.tree.leaves(cycled.state.learner.online), jax.tree.leaves(scanned.state.learner.online)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_loop_kind_per_network_and_backend(make_config):
    assert loop_kind(make_config()) == "scan"
    cnn = make_config(network={"kind": "nature_cnn"})
    assert loop_kind(cnn) == ("cycle" if jax.default_backend() == "cpu" else "scan")
    assert loop_kind(make_config(network={"kind": "nature_cnn"}, run={"loop": "scan"})) == "scan"
    assert loop_kind(make_config(run={"loop": "cycle"})) == "cycle"


@pytest.mark.parametrize("kind", ["scan", "cycle"])
def test_chunks_donate_the_state(make_config, kind):
    """The replay buffer is updated in place: the input state's buffers are consumed."""
    pipeline = build_pipeline(make_config())
    state = pipeline.init(jax.random.key(0))
    runner = ChunkRunner(pipeline, kind, max_cycles=8)
    new_state, metrics, done = runner(state, False, 3)
    assert state.replay.obs.is_deleted()
    assert done == 3 and int(new_state.env_steps) == 3 and metrics["steps"].tolist() == [1, 2, 3]


def test_chunk_length_is_an_argument_of_one_compiled_loop(make_config):
    """Chunks of any length share one program per learn flag; split chunks give the
    same state as one long chunk."""
    config = make_config(learner={"warmup": 0})

    def run(chunks: list[int]):
        pipeline = build_pipeline(config)  # a pool of its own: same seed, same streams
        runner = ChunkRunner(pipeline, "scan", max_cycles=16)
        traces = []
        run_cycles = runner._run_cycles
        runner._run_cycles = lambda *args: traces.append(1) or run_cycles(*args)
        state = pipeline.init(jax.random.key(0))
        for cycles in chunks:
            state = runner(state, True, cycles)[0]
        return state, len(traces)

    (a, _), (b, traces) = run([12]), run([5, 1, 6])
    assert traces == 1
    leaves = lambda s: jax.tree.leaves(eqx.filter(s.learner, eqx.is_array))  # noqa: E731
    for x, y in zip(leaves(a), leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_summarize_chunk_by_hand():
    metrics = {
        "steps": np.asarray([2, 4]),
        "episode_done": np.asarray([[[False, True]], [[True, False]]]).reshape(2, 2),
        "episode_return": np.asarray([[5.0, 7.0], [9.0, 1.0]]),
        "episode_length": np.asarray([[5, 7], [9, 1]]),
        "epsilon": np.asarray([0.5, 0.25]),
        "updated": np.asarray([False, True]),
        "gradient_steps": np.asarray([0, 4]),
        "loss": np.asarray([[0.0], [3.0]]),
        "target_updated": np.asarray([True, False]),
    }
    record, episodes = summarize_chunk(metrics)
    assert episodes == [(2, 7.0, 7), (4, 9.0, 9)]
    assert record["train/episodes"] == 2 and record["train/return_mean"] == 8.0
    assert record["train/epsilon"] == 0.25 and record["train/updates"] == 4  # gradient steps, not cycles
    assert record["train/loss"] == 3.0  # cycles without an update are left out
    assert record["operators/target_updated"] == 1


def test_wandb_failure_warns_once_and_training_continues(make_config, monkeypatch):
    import wandb

    def refuse(*args, **kwargs):
        raise RuntimeError("no network here")

    monkeypatch.setattr(wandb, "init", refuse)
    config = make_config(run={"total_steps": 200, "wandb": {"mode": "online"}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config, name="nowandb")
    messages = [str(w.message) for w in caught if "W&B" in str(w.message)]
    assert messages == ["W&B disabled for this run (no network here); metrics stay in metrics.jsonl"]
    assert [m["env_steps"] for m in read_metrics(result.folder)] == [100, 200]


def test_wandb_error_during_the_run_warns_once(tmp_path, monkeypatch):
    import wandb

    class BrokenRun:
        id = "broken"
        calls = 0

        def log(self, *args, **kwargs):
            BrokenRun.calls += 1
            raise OSError("disk full")

    monkeypatch.setattr(wandb, "init", lambda *a, **k: BrokenRun())
    log = WandbLog(WandbConfig(mode="online"), tmp_path, "run", {})
    with pytest.warns(UserWarning, match="disk full") as caught:
        log.log({"x": 1.0}, 1)
        log.log({"x": 2.0}, 2)
        log.finish({})
    assert len(caught) == 1 and BrokenRun.calls == 1


def test_wandb_is_offline_by_default_and_writes_into_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert WandbConfig().mode == "offline"
    log = WandbLog(WandbConfig(), tmp_path, "offline-test", {"algorithm": "dqn"})
    assert log.run is not None
    log.log({"train/return_recent": 10.0}, 100)
    log.finish({"status": "finished"})
    assert list(tmp_path.glob("wandb/offline-run-*/*.wandb"))


def test_atari_nature_cnn_pipeline_runs(make_config):
    """dqn-atari.toml at a tiny size: Pong-v5 frame stacks, the Nature CNN, and the
    per-cycle loop on CPU."""
    config = load_pipeline(
        "dqn-atari",
        [
            "--run.total-steps=48",
            "--run.log-every=24",
            "--learner.warmup=24",
            "--replay.capacity=200",
            "--operators.target-sync.period=16",
            "--network.dense-units=32",
            "--no-run.progress",
            "--run.wandb.mode=disabled",
            f"--run.out-dir={make_config().run.out_dir}",
            f"--run.checkpoint-dir={make_config().run.checkpoint_dir}",
        ],
    )[0]
    result = train(config, name="atari")
    metrics = read_metrics(result.folder)
    assert [m["env_steps"] for m in metrics] == [24, 48]
    assert sum(m["train/updates"] for m in metrics) == (48 - 24 + 4) // 4  # one update per 4 steps
    assert result.summary["loop"] == loop_kind(config)
    assert np.isfinite(metrics[-1]["train/loss"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_request_the_same_stop(sig):
    """Both signals set the flag the loop reads (a stop with a checkpoint), and the
    previous handlers come back afterwards; a second SIGINT interrupts at once."""
    from sparseq.runs.runner import _StopRequest

    before = signal.getsignal(sig)
    with _StopRequest() as stop:
        os.kill(os.getpid(), sig)
        assert stop.signal == sig
        if sig == signal.SIGINT:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)
    assert signal.getsignal(sig) == before
