"""`sparseq report` on synthetic run folders, checked against direct computations."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import trim_mean

from sparseq.cli import main as cli_main
from sparseq.outputs import report


def write_run(
    root: Path,
    name: str,
    *,
    algorithm: str,
    task: str,
    seed: int,
    episodes: list[tuple[int, float]],
    env_steps: int,
    sparsity: list[tuple[int, float]] | None = None,
    summary: bool = True,
) -> Path:
    """A run folder as the runner writes it: episodes.csv, metrics.jsonl, pipeline.toml,
    summary.json (left out to mimic a killed run)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "pipeline.toml").write_text(
        f'algorithm = "{algorithm}"\n\n[run]\nseed = {seed}\n\n[env]\ntask_id = "{task}"\n'
    )
    lines = ["env_steps,episode_return,episode_length"] + [f"{s},{r},10" for s, r in episodes]
    (folder / "episodes.csv").write_text("\n".join(lines) + "\n")
    records = [{"env_steps": s, "train/return_recent": 0.0} for s in range(1000, env_steps + 1, 1000)]
    for step, value in sparsity or []:
        records.append({"env_steps": step, report.SPARSITY_KEY: value})
    records.sort(key=lambda r: r["env_steps"])
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary:
        (folder / "summary.json").write_text(
            json.dumps({"algorithm": algorithm, "task_id": task, "seed": seed, "env_steps": env_steps})
        )
    return folder


def episodes_for(seed: int, offset: float) -> list[tuple[int, float]]:
    """Returns rising with steps; the last 10% (steps > 9000) hold the final episodes."""
    rng = np.random.default_rng(seed)
    steps = np.arange(250, 10_001, 250)
    return [(int(s), float(offset + s / 100 + rng.normal())) for s in steps]


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, dict[tuple[str, str, int], list[tuple[int, float]]]]:
    root = tmp_path / "runs"
    made = {}
    for algorithm, offset in (("dqn", 0.0), ("eaudedqn", 5.0)):
        for task in ("CartPole-v1", "Acrobot-v1"):
            for seed in range(4):
                episodes = episodes_for(seed + 10 * len(made), offset)
                sparsity = [(5000, 0.5), (10_000, 0.9)] if algorithm == "eaudedqn" else None
                write_run(
                    root / algorithm,
                    f"{task}-{seed}",
                    algorithm=algorithm,
                    task=task,
                    seed=seed,
                    episodes=episodes,
                    env_steps=10_000,
                    sparsity=sparsity,
                )
                made[(algorithm, task, seed)] = episodes
    return root, made


def direct_final(episodes: list[tuple[int, float]], env_steps: int) -> float:
    return float(np.mean([r for s, r in episodes if s > 0.9 * env_steps]))


def test_report_numbers_match_direct_computation(runs, tmp_path):
    root, made = runs
    out = tmp_path / "report"
    result = report.write_report([root], out, reps=300, seed=1)
    assert len(result["runs"]) == 16
    for row in result["runs"]:
        expected = direct_final(made[(row["algorithm"], row["task_id"], row["seed"])], 10_000)
        assert row["final_score"] == pytest.approx(expected)
        assert row["window_episodes"] == 4  # steps 9250, 9500, 9750, 10000
    for entry in result["per_task"]:
        scores = [direct_final(made[(entry["algorithm"], entry["task_id"], s)], 10_000) for s in range(4)]
        middle = sorted(scores)[1:3]  # IQM of 4 values: mean of the middle two
        assert entry["iqm"] == pytest.approx(np.mean(middle))
        assert entry["mean"] == pytest.approx(np.mean(scores))
        assert min(scores) <= entry["ci_low"] <= entry["iqm"] <= entry["ci_high"] <= max(scores)
        expected_sparsity = 0.9 if entry["algorithm"] == "eaudedqn" else None
        assert entry["final_sparsity"] == expected_sparsity
    # Raw returns are never pooled across tasks.
    assert all("normalised_iqm" not in e for e in result["per_algorithm"])
    for name in ("report.md", "report.json", "returns_CartPole-v1.png", "sparsity_Acrobot-v1.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "sparsity_vs_score.png").exists()
    markdown = (out / "report.md").read_text()
    cartpole_dqn = next(e for e in result["per_task"] if e["task_id"] == "CartPole-v1" and e["algorithm"] == "dqn")
    assert f"| CartPole-v1 | dqn | 4 | {cartpole_dqn['iqm']:,.2f} |" in markdown


def test_bootstrap_is_seeded_and_brackets_the_iqm(runs, tmp_path):
    root, _ = runs
    first = report.write_report([root], tmp_path / "a", reps=200, seed=7, plots=False)
    second = report.write_report([root], tmp_path / "b", reps=200, seed=7, plots=False)
    assert first["per_task"] == second["per_task"]
    rng = np.random.default_rng(0)
    groups = [rng.normal(size=5), rng.normal(size=5) + 3]
    point, low, high = report.bootstrap_iqm(groups, reps=500, seed=0)  # rliable path (5 and 5)
    assert point == pytest.approx(trim_mean(np.concatenate(groups), 0.25))
    assert low < point < high
    ragged = [groups[0], groups[1][:3]]  # numpy path (5 and 3 runs)
    point, low, high = report.bootstrap_iqm(ragged, reps=500, seed=0)
    assert point == pytest.approx(trim_mean(np.concatenate(ragged), 0.25))
    assert low < point < high


def test_human_normalised_aggregate(runs, tmp_path, monkeypatch):
    root, made = runs
    references = {"CartPole-v1": (10.0, 110.0), "Acrobot-v1": (-50.0, 50.0)}
    monkeypatch.setattr(report, "reference_scores", lambda: references.get)
    result = report.write_report([root], tmp_path / "report", reps=200, seed=0)
    for entry in result["per_algorithm"]:
        pooled = [
            (direct_final(made[(entry["algorithm"], task, s)], 10_000) - lo) / (hi - lo)
            for task, (lo, hi) in references.items()
            for s in range(4)
        ]
        assert entry["normalised_iqm"] == pytest.approx(trim_mean(pooled, 0.25))
        assert entry["normalised_ci_low"] <= entry["normalised_iqm"] <= entry["normalised_ci_high"]
    assert (tmp_path / "report" / "normalised_iqm.png").exists()
    assert "Per algorithm (human-normalised" in (tmp_path / "report" / "report.md").read_text()


def test_killed_run_and_empty_window(tmp_path):
    # No summary.json: identity from pipeline.toml, length from the last log point.
    folder = write_run(
        tmp_path,
        "killed",
        algorithm="dqn",
        task="CartPole-v1",
        seed=3,
        episodes=[(100, 7.0), (500, 9.0)],
        env_steps=2000,
        summary=False,
    )
    run = report.read_run(folder)
    assert (run.algorithm, run.task_id, run.seed, run.env_steps) == ("dqn", "CartPole-v1", 3, 2000)
    score, window = report.final_score(run.episode_steps, run.episode_returns, run.env_steps)
    assert (score, window) == (9.0, 0)  # nothing ended after step 1800: the last episode
    assert math.isnan(report.final_score(np.array([]), np.array([]), 100)[0])
    result = report.write_report([tmp_path], tmp_path / "out", reps=50, plots=False)
    assert "9.00*" in (tmp_path / "out" / "report.md").read_text()
    assert result["runs"][0]["window_episodes"] == 0


def test_duplicate_runs_keep_the_longest(tmp_path):
    for name, steps in (("a-1", 1000), ("a-2", 3000)):
        write_run(tmp_path, name, algorithm="dqn", task="T", seed=0, episodes=[(steps, float(steps))], env_steps=steps)
    result = report.write_report([tmp_path], tmp_path / "out", reps=50, plots=False)
    assert [r["final_score"] for r in result["runs"]] == [3000.0]
    assert any("duplicate" in note for note in result["notes"])


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run folder" in err
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert cli_main(["report"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_reference_scores_come_from_the_env_table(tmp_path, monkeypatch):
    (tmp_path / "envs" / "atari").mkdir(parents=True)
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "envs" / "atari" / "reference_scores.toml").write_text(
        "[scores]\nPong-v5 = { random = -20.7, human = 14.6 }\n"
    )
    monkeypatch.setenv("SPARSEQ_HOME", str(tmp_path))
    lookup = report.reference_scores()
    assert lookup("Pong-v5") == (-20.7, 14.6)
    assert lookup("CartPole-v1") is None
    assert report.normalise(14.6, lookup("Pong-v5")) == pytest.approx(1.0)
