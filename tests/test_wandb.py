"""W&B dashboards: groups, tags and job types, the step counter as every metric's x-axis,
and `sparseq report --wandb`. A fake `wandb` module records the calls; one smoke test
each runs the real wandb in offline mode and reads back the run file it writes."""

import dataclasses
import glob
import struct
import sys
import time
import types
import zlib
from pathlib import Path
from typing import Any

import pytest
from tests.test_report import episodes_for, write_run

from sparseq.outputs import report
from sparseq.outputs.video import VideoResult
from sparseq.outputs.wandb_dashboard import default_group, default_tags, pipeline_name
from sparseq.pipeline.config.dump import to_dict
from sparseq.pipeline.config.schema import PipelineConfig, WandbConfig
from sparseq.runs.log import WandbLog

STAMP = "20260101-000000"


class FakeRun:
    def __init__(self, kwargs: dict[str, Any]):
        self.init = kwargs
        self.id = kwargs.get("id") or "fake0001"
        self.metrics: list[tuple[str, dict[str, Any]]] = []
        self.rows: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (data, log kwargs)
        self.summary: dict[str, Any] = {}
        self.finished = False

    def define_metric(self, name: str, **kwargs: Any) -> None:
        self.metrics.append((name, kwargs))

    def log(self, data: dict[str, Any], **kwargs: Any) -> None:
        assert not self.finished
        self.rows.append((dict(data), kwargs))

    def finish(self, **kwargs: Any) -> None:
        self.finished = True


class Media:
    def __init__(self, path: str, **kwargs: Any):
        self.path = path


class Table:
    def __init__(self, columns: list[str], data: list[list[Any]]):
        self.columns, self.data = columns, data


def make_fake_wandb(fail: Exception | None = None) -> types.ModuleType:
    fake = types.ModuleType("wandb")
    fake.runs = []

    def init(**kwargs: Any) -> FakeRun:
        if fail is not None:
            raise fail
        fake.runs.append(FakeRun(kwargs))
        return fake.runs[-1]

    fake.init = init
    fake.Settings = lambda **kwargs: kwargs
    fake.Image = type("Image", (Media,), {})
    fake.Video = type("Video", (Media,), {})
    fake.Table = Table
    return fake


@pytest.fixture
def fake_wandb(monkeypatch) -> types.ModuleType:
    fake = make_fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def run_config(seed: int = 0, **sections: dict[str, Any]) -> dict[str, Any]:
    """A run's W&B config (to_dict of its PipelineConfig), `sections` replacing fields."""
    base = PipelineConfig()
    changes = {"run": {"seed": seed}, **sections}
    fields = {name: dataclasses.replace(getattr(base, name), **values) for name, values in changes.items()}
    return to_dict(dataclasses.replace(base, **fields))


def tiny_png(path: Path) -> Path:
    """A 1x1 RGB PNG written by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")))
    return path


# ----------------------------------------------------------------------------- groups and tags


def test_group_tags_and_job_type_by_default(fake_wandb, tmp_path):
    log = WandbLog(WandbConfig(), tmp_path, f"dqn-cartpole-{STAMP}", run_config(seed=3))
    log.finish({})
    (run,) = fake_wandb.runs
    assert run.init["group"] == "dqn-cartpole-CartPole-v1"
    assert run.init["tags"] == ["dqn", "CartPole-v1", "seed-3", "learner-q"]
    assert run.init["job_type"] == "train"
    assert run.init["name"] == f"dqn-cartpole-{STAMP}" and run.init["mode"] == "offline"
    assert run.finished


def test_every_seed_of_a_pack_and_every_rerun_share_the_group(fake_wandb, tmp_path):
    names = [f"dqn-cartpole-{STAMP}-seed-{s}" for s in (1, 2)] + [f"dqn-cartpole-{STAMP}-2", "dqn-cartpole"]
    for seed, name in enumerate(names):
        WandbLog(WandbConfig(), tmp_path, name, run_config(seed=seed)).finish({})
    assert {run.init["group"] for run in fake_wandb.runs} == {"dqn-cartpole-CartPole-v1"}
    assert [run.init["tags"][2] for run in fake_wandb.runs] == ["seed-0", "seed-1", "seed-2", "seed-3"]
    # run.name is the pipeline's name; a task already in it is not repeated.
    named = run_config(run={"name": "pong-sweep", "seed": 0}, env={"task_id": "Pong-v5"})
    assert default_group(f"pong-sweep-{STAMP}", named) == "pong-sweep-Pong-v5"
    assert default_group("x", run_config(run={"name": "ablation-Pong-v5-seed-2"}, env={"task_id": "Pong-v5"})) == (
        "ablation-Pong-v5"
    )
    assert pipeline_name(f"run-{STAMP}", {}) == "run" and default_tags({}) == ()


def test_group_and_tags_overrides(fake_wandb, tmp_path):
    config = run_config(seed=1)
    WandbLog(WandbConfig(group="sweep-lr"), tmp_path, "a", config).finish({})
    WandbLog(WandbConfig(group="sweep-lr"), tmp_path, "b", config, group="mine", tags=("x", "y")).finish({})
    WandbLog(WandbConfig(), tmp_path, "c", config, job_type="eval").finish({})
    first, second, third = fake_wandb.runs
    assert first.init["group"] == "sweep-lr" and first.init["tags"] == ["dqn", "CartPole-v1", "seed-1", "learner-q"]
    assert second.init["group"] == "mine" and second.init["tags"] == ["x", "y"]
    assert third.init["job_type"] == "eval" and third.init["group"] == "c-CartPole-v1"


# ----------------------------------------------------------------------------- the x-axis


def test_metrics_use_the_step_counter_as_x_axis_on_every_row(fake_wandb, tmp_path):
    log = WandbLog(WandbConfig(), tmp_path, f"dqn-cartpole-{STAMP}", run_config())
    log.log({"env_steps": 100, "train/loss": 0.5, "train/epsilon": None}, 100)
    video = VideoResult(path=tmp_path / "eval-200.mp4", frames=3, episode_returns=[1.0], fps=30.0)
    log.log_video("eval/video", video)  # the runner's order: the video, then its log point
    log.log({"env_steps": 200, "train/loss": 0.25, "eval/video_return": 1.0}, 200)
    log.log({"train/loss": 0.1}, 300)  # a record without the key: the `step` argument
    log.log_images({"plots/returns": tiny_png(tmp_path / "returns.png"), "plots/none": tmp_path / "absent.png"})
    log.finish({"status": "finished", "env_steps": 300})
    (run,) = fake_wandb.runs
    assert run.metrics == [("env_steps", {}), ("*", {"step_metric": "env_steps"})]
    assert all("env_steps" in data for data, _ in run.rows)
    assert all("step" not in kwargs for _, kwargs in run.rows)  # W&B's _step only counts rows
    steps = [(data["env_steps"], sorted(k for k in data if k != "env_steps")) for data, _ in run.rows]
    assert steps == [
        (100, ["train/loss"]),
        (200, ["eval/video"]),
        (200, ["eval/video_return", "train/loss"]),
        (300, ["train/loss"]),
        (300, ["plots/returns"]),
    ]
    assert run.rows[1][1] == {"commit": False}  # merged into its log point's row
    assert isinstance(run.rows[1][0]["eval/video"], fake_wandb.Video)
    assert isinstance(run.rows[4][0]["plots/returns"], fake_wandb.Image)
    assert run.summary == {"status": "finished", "env_steps": 300} and run.finished


def test_offline_runs_count_gradient_steps(fake_wandb, tmp_path):
    offline = run_config(dataset={"offline": True, "path": "runs/x/dataset"})
    log = WandbLog(WandbConfig(), tmp_path, "cql", offline)
    log.log({"gradient_steps": 10, "train/loss": 1.0}, 10)
    log.log_images({"plots/returns": tiny_png(tmp_path / "returns.png")}, step=12)
    log.finish({})
    online = WandbLog(WandbConfig(), tmp_path, "dqn", run_config())
    online.log({"gradient_steps": 5, "train/loss": 1.0}, 5)  # the record's key wins over the config's
    online.finish({})
    first, second = fake_wandb.runs
    assert first.metrics == [("gradient_steps", {}), ("*", {"step_metric": "gradient_steps"})]
    assert [data["gradient_steps"] for data, _ in first.rows] == [10, 12]
    assert second.metrics[-2:] == [("gradient_steps", {}), ("*", {"step_metric": "gradient_steps"})]
    assert second.rows[0][0] == {"gradient_steps": 5, "train/loss": 1.0}


def test_disabled_mode_makes_no_run(fake_wandb, tmp_path):
    log = WandbLog(WandbConfig(mode="disabled"), tmp_path, "run", run_config())
    log.log({"env_steps": 1}, 1)
    log.log_video("eval/video", None)
    log.finish({})
    assert fake_wandb.runs == [] and log.run is None and log.group == "run-CartPole-v1"


# ----------------------------------------------------------------------------- sparseq report --wandb


def write_pipeline_runs(root: Path, *, group: str = "") -> list[Path]:
    """Three seeds of dqn-cartpole and two of eaudedqn-cartpole (folders named as the
    runner names them), and one diverged run; `group`: their run.wandb.group."""
    keys = f'\n[run.wandb]\nproject = "proj"\ngroup = "{group}"\n' if group else ""
    folders = []
    for algorithm, seeds in (("dqn", 3), ("eaudedqn", 2)):
        for seed in range(seeds):
            folders.append(
                write_run(
                    root,
                    f"{algorithm}-cartpole-20260101-00000{seed}",
                    algorithm=algorithm,
                    task="CartPole-v1",
                    seed=seed,
                    episodes=episodes_for(seed, 0.0),
                    env_steps=10_000,
                    tail=keys,
                )
            )
    diverged = dict(episodes=episodes_for(9, 0.0), env_steps=10_000, status="non-finite", tail=keys)
    write_run(root, f"dqn-cartpole-{STAMP}-9", algorithm="dqn", task="CartPole-v1", seed=9, **diverged)
    return folders


def test_report_wandb_logs_tables_and_plots_to_a_report_run(fake_wandb, tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "report"
    write_pipeline_runs(root)
    assert report.main([str(root), "--out", str(out), "--reps", "50", "--wandb"]) == 0
    (run,) = fake_wandb.runs
    assert run.init["job_type"] == "report" and run.init["mode"] == "offline"
    assert run.init["group"] == "report"  # dqn-cartpole-CartPole-v1 and eaudedqn-cartpole-CartPole-v1
    assert run.init["project"] == "sparseq" and run.init["dir"] == str(out)
    assert run.init["config"]["reps"] == 50 and run.finished
    ((data, _),) = run.rows
    tables = {key: value for key, value in data.items() if key.startswith("report/")}
    assert sorted(tables) == ["report/not_aggregated", "report/per_algorithm", "report/per_task", "report/runs"]
    assert all(isinstance(t, Table) for t in tables.values())
    per_task = tables["report/per_task"]
    assert {"task_id", "group", "iqm", "ci_low", "ci_high"} <= set(per_task.columns)
    assert [row[per_task.columns.index("group")] for row in per_task.data] == ["dqn", "eaudedqn"]
    assert len(tables["report/runs"].data) == 5 and len(tables["report/not_aggregated"].data) == 1
    images = {key: value for key, value in data.items() if key.startswith("plots/")}
    assert sorted(images) == ["plots/returns_CartPole-v1", "plots/sparsity_vs_score"]
    assert all(isinstance(i, fake_wandb.Image) and Path(i.path).parent == out for i in images.values())
    assert "W&B report run" in capsys.readouterr().out


def test_report_run_takes_the_group_its_runs_share(fake_wandb, tmp_path):
    root, out = tmp_path / "runs", tmp_path / "report"
    write_pipeline_runs(root, group="sweep-7")
    flags = ["--wandb", "--wandb-mode", "online", "--wandb-project", "mine", "--no-plots", "--reps", "20"]
    assert report.main([str(root / "dqn-cartpole-20260101-000000"), "--out", str(out), *flags]) == 0
    assert report.main([str(root), "--out", str(out), "--no-plots", "--reps", "20", "--wandb"]) == 0
    first, second = fake_wandb.runs
    assert first.init["group"] == "sweep-7" and first.init["mode"] == "online" and first.init["project"] == "mine"
    assert not any(key.startswith("plots/") for key in first.rows[0][0])
    assert second.init["group"] == "sweep-7" and second.init["project"] == "proj"


def test_report_without_the_flag_or_with_w_and_b_failing(monkeypatch, tmp_path, capsys):
    root = tmp_path / "runs"
    write_pipeline_runs(root)
    fake = make_fake_wandb(fail=RuntimeError("no wandb here\nsecond line"))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert report.main([str(root), "--out", str(tmp_path / "a"), "--no-plots", "--reps", "20"]) == 0
    assert not (tmp_path / "a" / "wandb").exists()
    capsys.readouterr()
    assert report.main([str(root), "--out", str(tmp_path / "b"), "--no-plots", "--reps", "20", "--wandb"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: W&B report not logged (no wandb here); the report files are written"]
    assert (tmp_path / "b" / "report.md").exists() and (tmp_path / "b" / "report.json").exists()


# ----------------------------------------------------------------------------- real wandb, offline


def wandb_records(folder: Path, wait: float = 20.0) -> list[Any]:
    """The records of the one offline run under `folder` (wandb's .wandb file: a leveldb
    log of 32 KiB blocks, 7-byte record headers, protobuf Records). wandb-core writes it
    from its own process: read again until its exit record is there."""
    (path,) = glob.glob(str(folder / "wandb" / "offline-run-*" / "*.wandb"))
    deadline = time.monotonic() + wait
    while True:
        records = read_records(Path(path).read_bytes())
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def read_records(data: bytes) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    position, pending, records = 7, b"", []
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:
            position += 32768 - position % 32768  # block padding
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(pending)
            except Exception:  # a record still being written
                break
            records.append(record)
        if kind in (0, 1, 4):
            pending = b""
    return records


def history_row(record: Any) -> dict[str, str]:
    return {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}


@pytest.fixture
def real_wandb(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))


def test_offline_wandb_log_round(real_wandb, tmp_path, recwarn):
    folder = tmp_path / f"dqn-cartpole-{STAMP}"
    folder.mkdir()
    log = WandbLog(WandbConfig(), folder, folder.name, run_config(seed=2))
    log.log({"env_steps": 100, "train/return_recent": 10.0}, 100)
    log.log({"env_steps": 200, "train/return_recent": 12.0}, 200)
    log.log_images({"plots/returns": tiny_png(tmp_path / "returns.png")})
    log.finish({"status": "finished", "env_steps": 200})
    assert not [w for w in recwarn if "W&B disabled" in str(w.message)]
    assert len(list(folder.glob("wandb/offline-run-*/*.wandb"))) == 1
    records = wandb_records(folder)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_group, list(run.tags), run.job_type) == (
        "dqn-cartpole-CartPole-v1",
        ["dqn", "CartPole-v1", "seed-2", "learner-q"],
        "train",
    )
    metrics = [r.metric for r in records if r.WhichOneof("record_type") == "metric"]
    assert any(m.glob_name == "*" and m.step_metric == "env_steps" for m in metrics)
    rows = [history_row(r) for r in records if r.WhichOneof("record_type") == "history"]
    assert [row.get("env_steps") for row in rows] == ["100", "200", "200"]
    assert rows[-1]["plots/returns/_type"] == '"image-file"'


def test_offline_report_run(real_wandb, tmp_path, capsys):
    root, out = tmp_path / "runs", tmp_path / "report"
    write_pipeline_runs(root, group="sweep-7")
    assert report.main([str(root), "--out", str(out), "--reps", "20", "--no-plots", "--wandb"]) == 0
    assert "warning" not in capsys.readouterr().err
    records = wandb_records(out)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_group, run.job_type) == ("sweep-7", "report")
    (row,) = [history_row(r) for r in records if r.WhichOneof("record_type") == "history"]
    assert row["report/per_task/_type"] == row["report/runs/_type"] == '"table-file"'
    assert list(out.glob("wandb/offline-run-*/files/media/table/report/per_task_*.table.json"))
