"""The `sparseq` command line, run as a subprocess in a clean folder: every kind of
bad input exits 2 with one line naming file, key path and value, no traceback, and
nothing written into the run folders; `list`; the default pipeline; a tiny training
run with its progress bar, run folder and summary."""

import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

SMALL = [
    "--run.total-steps=300",
    "--run.log-every=100",
    "--learner.warmup=50",
    "--replay.batch-size=8",
    "--network.hidden=16,16",
    "--run.wandb.mode=disabled",
]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


@pytest.fixture
def existing_run(tmp_path) -> Path:
    """A finished run folder under runs/, as a previous `sparseq train` leaves it."""
    folder = tmp_path / "runs" / "dqn-cartpole-20260101-000000"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"env_steps": 100}\n')
    (folder / "pipeline.toml").write_text("# resolved\n")
    return folder


BAD_INPUTS = [
    # (files to write, args, expected one-line message after "sparseq: error: ")
    ({}, ["train", "missing.toml"], "missing.toml: file not found"),
    ({}, ["train", "no-such-pipeline"], "no-such-pipeline: file not found"),
    (
        {"syntax.toml": "[replay\nbatch_size = 3\n"},
        ["train", "syntax.toml"],
        "syntax.toml: TOML syntax error: ",
    ),
    (
        {"unknown.toml": 'extends = "{repo}/pipelines/dqn-cartpole.toml"\n[learner]\nlerning_rate = 0.001\n'},
        ["train", "unknown.toml"],
        "unknown.toml: learner.lerning_rate = 0.001: unknown key; did you mean learner.learning_rate?",
    ),
    (
        {"type.toml": '[replay]\nbatch_size = "big"\n'},
        ["train", "type.toml"],
        "type.toml: replay.batch_size = 'big': must be an integer",
    ),
    (
        {"batch.toml": "[replay]\nbatch_size = 0\n"},
        ["train", "batch.toml"],
        "batch.toml: replay.batch_size = 0: must be > 0",
    ),
    (
        {"capacity.toml": "[replay]\ncapacity = 16\nbatch_size = 32\n"},
        ["train", "capacity.toml"],
        "capacity.toml: replay.capacity = 16: must be >= replay.batch_size (32)",
    ),
    (
        {"gamma.toml": "[learner]\ngamma = 1.01\n"},
        ["train", "gamma.toml"],
        "gamma.toml: learner.gamma = 1.01: must be in [0, 1]",
    ),
    (
        {"steps.toml": "[run]\ntotal_steps = -100\n"},
        ["train", "steps.toml"],
        "steps.toml: run.total_steps = -100: must be > 0",
    ),
    (
        {"task.toml": '[env]\ntask_id = "LunarLander-v9"\n'},
        ["train", "task.toml"],
        "task.toml: env.task_id = 'LunarLander-v9': unknown envpool task id; did you mean 'LunarLander-v3'?",
    ),
    (
        {"preset.toml": '[env]\npreset = "mujoco-nope"\n'},
        ["train", "preset.toml"],
        "preset.toml: env.preset = 'mujoco-nope': no preset envs/mujoco-nope.toml",
    ),
    ({}, ["train", "dqn-cartpole", "--replay.batch-size", "-1"], "command line: replay.batch_size = -1: must be > 0"),
    ({}, ["train", "dqn-cartpole", "--learner.gamma=2"], "command line: learner.gamma = 2.0: must be in [0, 1]"),
    (
        {},
        ["train", "dqn-cartpole", "--learner.lerning-rate", "0.1"],
        "command line: learner.lerning_rate = '0.1': unknown key; did you mean learner.learning_rate?",
    ),
    ({}, ["train", "dqn-cartpole", "--network.kind", "nature_cnn"], "needs image observations"),
    ({}, ["trian"], "unknown command 'trian'; did you mean 'train'?"),
]


IDS = [" ".join(a) for _, a, _ in BAD_INPUTS]
# Run as real processes (exit status, no traceback on stderr); the rest in-process.
SUBPROCESS = {"train missing.toml", "train syntax.toml", "train dqn-cartpole --network.kind nature_cnn"}


def check_one_line_error(returncode: int, stdout: str, stderr: str, expected: str) -> None:
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sparseq: error: ")
    assert expected in lines[0], lines[0]
    assert "Traceback" not in stderr and stdout == ""


@pytest.mark.parametrize(("files", "args", "expected"), BAD_INPUTS, ids=IDS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys, existing_run, files, args, expected
):
    from sparseq.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
    for name, text in files.items():
        (tmp_path / name).write_text(text.replace("{repo}", str(REPO)))
    before = snapshot(tmp_path)
    returncode = main(list(args))
    out, err = capsys.readouterr()
    check_one_line_error(returncode, out, err, expected)
    assert snapshot(tmp_path) == before  # no run folder, no checkpoint, nothing changed


@pytest.mark.parametrize(
    ("files", "args", "expected"),
    [case for case, name in zip(BAD_INPUTS, IDS) if name in SUBPROCESS],
    ids=[name for name in IDS if name in SUBPROCESS],
)
def test_bad_input_exit_status_of_the_process(tmp_path, run_cli, existing_run, files, args, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text.replace("{repo}", str(REPO)))
    before = snapshot(tmp_path)
    result = run_cli(*args)
    check_one_line_error(result.returncode, result.stdout, result.stderr, expected)
    assert snapshot(tmp_path) == before


def test_bad_value_message_names_the_value_as_written(tmp_path, run_cli):
    """A wrong value of a key set in a pipeline file names that file, not the base."""
    (tmp_path / "base.toml").write_text("[learner]\ngamma = 0.9\n")
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[replay]\ncapacity = 4\nbatch_size = 8\n')
    result = run_cli("train", "child.toml")
    assert result.returncode == 2
    assert result.stderr.strip() == "sparseq: error: child.toml: replay.capacity = 4: must be >= replay.batch_size (8)"


def test_list_shows_pipelines_and_presets(run_cli):
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name in ("quickstart", "dqn-cartpole", "tfdqn-cartpole", "dqn-lunarlander", "tfdqn-lunarlander", "dqn-atari"):
        assert f"  {name} " in result.stdout
    assert "  classic " in result.stdout and "  atari " in result.stdout


def test_train_without_a_pipeline_uses_quickstart(run_cli):
    result = run_cli("train", "--help")
    assert result.returncode == 0, result.stderr
    assert "sparseq train quickstart" in result.stdout
    assert "--replay.batch-size" in result.stdout and "--learner.learning-rate" in result.stdout


def test_help_shows_the_pipeline_values(run_cli):
    result = run_cli("train", "dqn-lunarlander", "--help")
    assert result.returncode == 0
    assert "LunarLander-v3" in result.stdout and "200000" in result.stdout


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "sparseq").exists()


def test_train_writes_a_run_folder_with_progress_and_summary(tmp_path, run_cli):
    result = run_cli("train", "dqn-cartpole", "--run.name=tiny", *SMALL)
    assert result.returncode == 0, result.stderr[-2000:]
    (folder,) = (tmp_path / "runs").glob("tiny-*")
    assert {"pipeline.toml", "metrics.jsonl", "returns.png", "summary.json"} <= {p.name for p in folder.iterdir()}
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [line["env_steps"] for line in lines] == [100, 200, 300]
    assert (folder / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["env_steps"] == 300 and summary["task_id"] == "CartPole-v1"
    # progress bar on stderr: steps/s, recent return, remaining time
    assert "step/s" in result.stderr and "return=" in result.stderr and "<" in result.stderr
    # short summary on stdout
    assert f"run folder: runs/{folder.name}" in result.stdout
    assert "return (last 20 episodes)" in result.stdout
    # the resolved pipeline reruns the same configuration
    rerun = run_cli("train", str(folder / "pipeline.toml"), "--help")
    assert rerun.returncode == 0 and "tiny" in rerun.stdout
