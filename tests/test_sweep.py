"""`sparseq sweep`: grid expansion, one-line errors, the plan of a re-run, and the
acceptance runs: 2 pipelines x 2 seeds on local Ray killed midway and re-run (only
the missing work runs, `sparseq report` covers every run), and --local with a run that
diverges while the other finishes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import REPO, cli_env, sparseq_cli

from sparseq.cli import main as cli_main
from sparseq.sweeps.check import check_points, resolve_pipelines
from sparseq.sweeps.errors import SweepError
from sparseq.sweeps.events import invocations
from sparseq.sweeps.grid import chunk_seeds, expand
from sparseq.sweeps.jobs import sweep_flags
from sparseq.sweeps.layout import SweepDir
from sparseq.sweeps.manifest import reconcile
from sparseq.sweeps.orphans import unfinished_workers
from sparseq.sweeps.plan import Action, step_for
from sparseq.sweeps.spec import read_sweep
from sparseq.sweeps.status import measure

# Tiny runs: ~10 s of compile and a few seconds of training each, a checkpoint halfway.
TINY = """
[sweep.overrides]
"run.total_steps" = 3000
"run.log_every" = 500
"run.checkpoint_every" = 1500
"learner.warmup" = 200
"replay.capacity" = 2000
"network.hidden" = [32]
"run.wandb.mode" = "disabled"
"""


@pytest.fixture(autouse=True)
def _project(monkeypatch, tmp_path):
    """In-process commands run in tmp_path and find the repository's pipelines."""
    monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def sweep_error(capsys, *args: str) -> str:
    """The one error line of `sparseq sweep ARGS` (exit status 2)."""
    assert cli_main(["sweep", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("sparseq: error: "), err
    return err


# ----------------------------------------------------------------------------- expansion


def test_expansion_ids_and_overrides(tmp_path):
    path = write(
        tmp_path,
        """
[sweep]
pipelines = ["dqn-cartpole", "isdqn-cartpole"]
tasks = ["CartPole-v1"]
seeds = [0, 1]
[sweep.overrides]
"run.total-steps" = 2000
[sweep.grid]
"replay.batch_size" = [32, 64]
"network.hidden" = [[16], [32, 32]]
""",
    )
    spec = read_sweep(path)
    assert spec.name == "grid"  # the file's stem
    points = expand(spec, resolve_pipelines(spec))
    ids = [p.id for p in points]
    assert len(ids) == len(set(ids)) == 2 * 2 * 2 * 2
    assert ids[:3] == [
        "dqn-cartpole_CartPole-v1_batch_size-32_hidden-16_s0",
        "dqn-cartpole_CartPole-v1_batch_size-32_hidden-16_s1",
        "dqn-cartpole_CartPole-v1_batch_size-32_hidden-32x32_s0",
    ]
    assert ids[-1] == "isdqn-cartpole_CartPole-v1_batch_size-64_hidden-32x32_s1"
    assert points[2].flags() == [
        "--run.total_steps=2000",
        "--replay.batch_size=32",
        "--network.hidden=32,32",
        "--env.task_id=CartPole-v1",
        "--run.seed=0",
    ]
    layout = SweepDir.at(None, spec.name)
    assert layout.root == tmp_path / "sweeps" / "grid"
    configs = check_points(spec, points, lambda p: sweep_flags(spec, layout, p))
    config = configs[points[2].id]
    assert (config.replay.batch_size, config.network.hidden, config.run.seed) == (32, (32, 32), 0)
    assert config.run.checkpoint_dir == str(tmp_path / "sweeps" / "grid" / "checkpoints")
    assert config.run.wandb.group == "grid" and not config.run.progress
    assert config.run.name == points[2].id


def test_the_example_sweep_file_is_valid(capsys):
    assert cli_main(["sweep", str(REPO / "docs" / "sweeps" / "cartpole-example.toml"), "--dry-run"]) == 0
    planned = capsys.readouterr().out.splitlines()
    assert len(planned) == 2 * 3 * 2 and all(line.split()[1] == "new" for line in planned)


def test_seed_packing(tmp_path):
    assert chunk_seeds((0, 1, 2, 3, 4), 2) == [(0, 1), (2, 3), (4,)]
    assert chunk_seeds((5, 6), 3) == [(5, 6)]
    path = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole"]\nseeds = [0, 1, 2, 3, 4]\nseeds_per_process = 2\n')
    spec = read_sweep(path)
    points = expand(spec, resolve_pipelines(spec))
    assert [p.id for p in points] == ["dqn-cartpole_s0+1", "dqn-cartpole_s2+3", "dqn-cartpole_s4"]
    assert [p.assignments["run.seeds"] for p in points] == [[0, 1], [2, 3], [4]]
    assert all(p.packed and "run.seed" not in p.assignments for p in points)
    # The loader (which knows run.seeds) accepts every pack; nothing runs.
    configs = check_points(spec, points, lambda p: [])
    assert configs["dqn-cartpole_s2+3"].run.seeds == (2, 3)


def test_ids_of_pipelines_with_one_name_stay_unique(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "dqn-cartpole.toml").write_text('extends = "dqn-cartpole"\n[replay]\nbatch_size = 16\n')
    path = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole", "mine/dqn-cartpole.toml"]\n')
    spec = read_sweep(path)
    ids = [p.id for p in expand(spec, resolve_pipelines(spec))]
    assert len(set(ids)) == 2 and all(i.startswith("dqn-cartpole-") for i in ids)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[sweep]\npipelines = []\n", ["sweep.pipelines", "the grid has no runs"]),
        ('[sweep]\npipelines = ["dqn-cartpole"]\n[sweep.grid]\n"replay.batch_size" = []\n', ["batch_size", "empty"]),
        (
            '[sweep]\npipelines = ["dqn-cartpol"]\n',
            ["'dqn-cartpol'", "no such pipeline", "did you mean 'dqn-cartpole'"],
        ),
        (
            '[sweep]\npipelines = ["dqn-cartpole"]\n[sweep.overrides]\n"replay.batch_sise" = 32\n',
            ["sweep.overrides.replay.batch_sise = 32:", "unknown key", "replay.batch_size"],
        ),
        (
            '[sweep]\npipelines = ["dqn-cartpole"]\n[sweep.grid]\n"replay.batch_size" = [32, "big"]\n',
            ["sweep.grid.replay.batch_size = 'big'", "must be an integer"],
        ),
        ('[sweep]\npipelines = ["dqn-cartpole"]\nsedes = [0]\n', ["sweep.sedes", "unknown key", "did you mean seeds"]),
        ('[sweep]\npipelines = ["dqn-cartpole"\nseeds = [0]\n', ["TOML syntax error", "line 3"]),
        ('[sweep]\npipelines = ["dqn-cartpole"]\nseeds = [0, 1, 0]\n', ["sweep.seeds", "seed 0 is given twice"]),
        (
            '[sweep]\npipelines = ["dqn-cartpole"]\nseeds = [0]\n[sweep.overrides]\n"run.seed" = 3\n',
            ["sweep.overrides.run.seed = 3", "seeds given twice"],
        ),
        (
            '[sweep]\npipelines = ["dqn-cartpole"]\nseeds = [0]\n[sweep.grid]\n"run.seeds" = [[1, 2]]\n',
            ["sweep.grid.run.seeds", "seeds given twice"],
        ),
        (
            '[sweep]\npipelines = ["dqn-cartpole"]\n[sweep.overrides]\n"run.out_dir" = "elsewhere"\n',
            ["run.out_dir", "set by the sweep"],
        ),
    ],
)
def test_bad_sweep_files_are_one_line_errors(tmp_path, capsys, text, expected):
    path = write(tmp_path, text)
    err = sweep_error(capsys, str(path))
    assert "grid.toml" in err
    for part in expected:
        assert part in err
    assert not (tmp_path / "sweeps").exists()  # nothing was written


def test_unreachable_address_fails_fast(tmp_path, capsys):
    path = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole"]\nseeds = [0]\n')
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    err = sweep_error(capsys, str(path), "--address", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    assert f"cannot reach a Ray cluster at 127.0.0.1:{port}" in err
    assert not (tmp_path / "sweeps").exists()


def test_without_ray_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    path = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole"]\nseeds = [0]\n')
    err = sweep_error(capsys, str(path))
    assert 'pip install -e ".[cluster]"' in err and "--local" in err
    assert not (tmp_path / "sweeps").exists()


def test_flags_that_do_not_go_together(tmp_path, capsys):
    path = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole"]\n')
    assert "--local" in sweep_error(capsys, str(path), "--local", "--address", "127.0.0.1:1")
    assert "--workers" in sweep_error(capsys, str(path), "--workers", "0")
    assert "--wrokers" in sweep_error(capsys, str(path), "--wrokers", "2")
    big = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole"]\n[sweep.resources]\nnum_cpus = 4\n', "big.toml")
    assert "num_cpus = 4: more than the local Ray instance's 2 CPUs" in sweep_error(capsys, str(big), "--workers", "2")
    assert not (tmp_path / "sweeps").exists()


def _reconcile(layout: SweepDir, path: Path, write: bool = True) -> list[str]:
    spec = read_sweep(path)
    points = expand(spec, resolve_pipelines(spec))
    configs = check_points(spec, points, lambda p: sweep_flags(spec, layout, p))
    return reconcile(layout.manifest, spec, points, configs, write=write)


def test_a_changed_grid_is_refused_but_added_runs_are_kept(tmp_path, capsys):
    (tmp_path / "mine.toml").write_text('extends = "dqn-cartpole"\n[replay]\nbatch_size = 16\n')
    text = '[sweep]\npipelines = ["mine"]\nseeds = [0, 1]\n[sweep.overrides]\n"run.total_steps" = 3000\n'
    path = write(tmp_path, text)
    layout = SweepDir.at(None, "grid")
    layout.root.mkdir(parents=True)
    assert _reconcile(layout, path) == ["mine_s0", "mine_s1"]
    write(tmp_path, text.replace("3000", "4000"))
    err = sweep_error(capsys, str(path))
    assert "mine_s0: run.total_steps 3000 -> 4000" in err and "may only add runs" in err
    write(tmp_path, text.replace("[0, 1]", "[0]"))
    assert "run mine_s1 is no longer in the grid" in sweep_error(capsys, str(path))
    write(tmp_path, text)
    (tmp_path / "mine.toml").write_text('extends = "dqn-cartpole"\n[replay]\nbatch_size = 64\n')
    assert "mine_s0: replay.batch_size 16 -> 64" in sweep_error(capsys, str(path))  # the pipeline file was edited
    (tmp_path / "mine.toml").write_text('extends = "dqn-cartpole"\n[replay]\nbatch_size = 16\n')
    # Another --out folder (or a renamed sweep) is the same grid: the layout's keys do not count.
    moved = SweepDir(tmp_path / "elsewhere")
    moved.root.mkdir()
    (moved.manifest).write_text(layout.manifest.read_text())
    assert _reconcile(moved, path) == []
    grown = write(tmp_path, text.replace("[0, 1]", "[0, 1, 2]"))
    assert _reconcile(layout, grown) == ["mine_s2"]
    assert [r["id"] for r in json.loads(layout.manifest.read_text())["runs"]][-1] == "mine_s2"
    write(tmp_path, text)  # a dry run checks the grid too, and writes nothing
    assert "run mine_s2 is no longer in the grid" in sweep_error(capsys, str(path), "--dry-run")
    with pytest.raises(SweepError):
        _reconcile(layout, path, write=False)
    assert len(json.loads(layout.manifest.read_text())["runs"]) == 3


def test_one_driver_per_sweep_folder(tmp_path, capsys):
    import fcntl

    path = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole"]\nseeds = [0]\n')
    layout = SweepDir.at(None, "grid")
    layout.root.mkdir(parents=True)
    with layout.lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        err = sweep_error(capsys, str(path), "--local")
    assert "another `sparseq sweep` (pid 4242) is running on this folder" in err
    assert not layout.manifest.exists()


# ----------------------------------------------------------------------------- the plan


def test_plan_from_folders(tmp_path):
    layout = SweepDir(tmp_path / "sweep")
    layout.create()

    def run(name: str, status: str | None = None, checkpoint: bool = False) -> str:
        (layout.run_folder(name)).mkdir()
        if status:
            (layout.run_folder(name) / "summary.json").write_text(json.dumps({"status": status}))
        layout.checkpoint_folder(name).mkdir()
        (layout.checkpoint_folder(name) / ("1500" if checkpoint else "1500.orbax-checkpoint-tmp-1")).mkdir()
        return name

    assert step_for(layout, run("a", "finished", True)).action == Action.SKIP
    assert step_for(layout, run("b", "non-finite")).action == Action.KEEP_FAILED
    assert step_for(layout, "b", retry_failed=True).action == Action.RESTART
    assert step_for(layout, run("c", None, checkpoint=True)).action == Action.RESUME
    assert step_for(layout, run("d", "stopped", checkpoint=True)).action == Action.RESUME
    assert step_for(layout, run("e", None)).action == Action.RESTART  # only a save in progress
    assert step_for(layout, "f").action == Action.NEW


def test_status_of_a_pack_reads_every_seed(tmp_path):
    for seed, (steps, ret) in {3: (1000, 10.0), 4: (1500, 20.0)}.items():
        (tmp_path / f"seed-{seed}").mkdir()
        records = [{"env_steps": 500, "train/return_recent": 1.0}, {"env_steps": steps, "train/return_recent": ret}]
        text = "\n".join(json.dumps(r) for r in records) + '\n{"env_st'  # a line being written
        (tmp_path / f"seed-{seed}" / "metrics.jsonl").write_text(text)
    assert measure(tmp_path) == (1000, 15.0)


# ----------------------------------------------------------------------------- runs


def _summaries(root: Path) -> dict[str, dict]:
    out = {}
    for path in root.glob("runs/*/summary.json"):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _finished(root: Path) -> set[str]:
    return {name for name, s in _summaries(root).items() if s.get("status") == "finished"}


def _with_checkpoint(root: Path, below: int | None = None) -> set[str]:
    """Runs with a checkpoint (one below step `below`, and none at it)."""
    runs = set()
    for folder in root.glob("checkpoints/*"):
        steps = {int(p.name) for p in folder.iterdir() if p.name.isdigit()}
        if steps and (below is None or (min(steps) < below and below not in steps)):
            runs.add(folder.name)
    return runs


def _started(root: Path) -> dict[str, str]:
    """run id -> mode of the runs the last invocation started."""
    return {e["run"]: e["mode"] for e in invocations(root / "events.jsonl")[-1] if e["event"] == "start"}


def _segments(root: Path, run: str) -> int:
    return len(json.loads((root / "runs" / run / "run.json").read_text())["segments"])


def test_sweep_on_local_ray_killed_and_rerun(tmp_path):
    path = write(tmp_path, '[sweep]\npipelines = ["dqn-cartpole", "tfdqn-cartpole"]\nseeds = [0, 1]\n' + TINY)
    root = tmp_path / "out"
    command = [sys.executable, "-m", "sparseq.cli", "sweep", str(path), "--workers", "2", "--out", str(root)]
    everything = {"dqn-cartpole_s0", "dqn-cartpole_s1", "tfdqn-cartpole_s0", "tfdqn-cartpole_s1"}

    # Kill everything at once (the driver, its local Ray, the workers: a worker outlives
    # its raylet by a second or so) once a run has finished and another is halfway.
    driver = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            if _finished(root) and _with_checkpoint(root, below=3000) - _finished(root):
                break
            time.sleep(0.05)
    finally:
        for pid in unfinished_workers(root / "events.jsonl").values():
            os.kill(pid, signal.SIGKILL)
        os.killpg(driver.pid, signal.SIGKILL)
        _, err = driver.communicate()
    assert driver.returncode == -signal.SIGKILL, f"the sweep ended before it was killed: {err.decode()[-2000:]}"
    deadline = time.monotonic() + 30
    while unfinished_workers(root / "events.jsonl") and time.monotonic() < deadline:
        time.sleep(0.2)
    finished = _finished(root)
    halfway = _with_checkpoint(root, below=3000) - finished
    assert finished and halfway
    finished_at = {run: (root / "runs" / run / "summary.json").stat().st_mtime for run in finished}

    # The re-run does only the missing work.
    rerun = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    started = _started(root)
    assert set(started) == everything - finished
    assert all(started[run] == "resume" for run in halfway)
    # The rest had no checkpoint (restarted or new), or, killed in the moment between
    # its final checkpoint and its summary, one at 3,000 (planned as a resume).
    assert all(started[run] in ("new", "restart", "resume") for run in everything - finished - halfway)
    assert _finished(root) == everything
    for run in halfway:
        assert _segments(root, run) == 2
    for run in finished:
        assert _segments(root, run) == 1
        assert (root / "runs" / run / "summary.json").stat().st_mtime == finished_at[run]
    status = json.loads((root / "status.json").read_text())
    assert {(r["run_id"], r["state"], r["steps"]) for r in status["runs"]} == {
        (r, "finished", 3000) for r in everything
    }
    assert "| dqn-cartpole_s0 | finished | 3,000 / 3,000 |" in rerun.stdout

    # A third invocation has nothing left to do.
    again = subprocess.run(command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _started(root) == {}
    assert "4 skip" in again.stderr

    report = sparseq_cli(tmp_path, "report", str(root), "--out", str(tmp_path / "report"), "--no-plots")
    assert report.returncode == 0, report.stderr
    assert "4 runs" in report.stdout
    text = (tmp_path / "report" / "report.md").read_text()
    assert all(str(root / "runs" / run) in text for run in everything)
    assert str(root / "checkpoints") not in text


def test_local_sweep_records_a_diverged_run_and_goes_on(tmp_path):
    path = write(
        tmp_path,
        '[sweep]\nname = "lr"\npipelines = ["dqn-cartpole"]\nseeds = [0]\n[sweep.grid]\n'
        '"learner.learning_rate" = [3e-4, 1e12]\n' + TINY.replace("3000", "1000"),
    )
    root = tmp_path / "sweeps" / "lr"
    first = sparseq_cli(tmp_path, "sweep", str(path), "--local", timeout=240)
    assert first.returncode == 1, first.stderr[-3000:]  # not every run finished
    good, bad = "dqn-cartpole_learning_rate-0.0003_s0", "dqn-cartpole_learning_rate-1e+12_s0"
    states = {r["run_id"]: r for r in json.loads((root / "status.json").read_text())["runs"]}
    assert states[good]["state"] == "finished" and states[good]["steps"] == 1000
    assert states[bad]["state"] == "failed" and "non-finite" in states[bad]["note"]
    assert _summaries(root)[bad]["status"] == "non-finite"
    assert set(_started(root)) == {good, bad}

    second = sparseq_cli(tmp_path, "sweep", str(path), "--local", timeout=60)
    assert second.returncode == 1
    assert _started(root) == {}  # the diverged run is a result: not trained again
    dry = sparseq_cli(tmp_path, "sweep", str(path), "--dry-run", "--retry-failed", timeout=60)
    assert dry.returncode == 0
    assert [line.split()[1] for line in dry.stdout.splitlines()] == ["skip", "restart"]
