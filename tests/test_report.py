"""`sparseq report` on synthetic run folders, checked against direct computations."""

import json
import math
import os
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
    status: str | None = "finished",
    run_keys: str = "",
    tail: str = "",
) -> Path:
    """A run folder as the runner writes it: episodes.csv, metrics.jsonl, pipeline.toml,
    summary.json (left out to mimic a killed run; status None: a summary written before
    runs recorded one; "non-finite": the two keys a diverged run writes). run_keys: TOML
    lines of [run]; tail: TOML appended to pipeline.toml (more tables)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "pipeline.toml").write_text(
        f'algorithm = "{algorithm}"\n\n[run]\nseed = {seed}\n{run_keys}\n\n[env]\ntask_id = "{task}"\n\n{tail}'
    )
    lines = ["env_steps,episode_return,episode_length"] + [f"{s},{r},10" for s, r in episodes]
    (folder / "episodes.csv").write_text("\n".join(lines) + "\n")
    records = [{"env_steps": s, "train/return_recent": 0.0} for s in range(1000, env_steps + 1, 1000)]
    for step, value in sparsity or []:
        records.append({"env_steps": step, report.SPARSITY_KEY: value})
    records.sort(key=lambda r: r["env_steps"])
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary:
        content = {"algorithm": algorithm, "task_id": task, "seed": seed, "env_steps": env_steps}
        if status == "non-finite":
            content = {"status": status, "env_steps": env_steps}
        elif status is not None:
            content["status"] = status
        (folder / "summary.json").write_text(json.dumps(content))
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
    assert run.status == "unfinished (no summary.json)"
    # A killed run is not aggregated; alone, it leaves nothing to report.
    with pytest.raises(report.ReportError, match=r"no run can be aggregated: 1 run was excluded"):
        report.write_report([tmp_path], tmp_path / "out", reps=50, plots=False)
    finished = tmp_path / "finished"
    write_run(
        finished,
        "short",
        algorithm="dqn",
        task="CartPole-v1",
        seed=3,
        episodes=[(100, 7.0), (500, 9.0)],
        env_steps=2000,
    )
    result = report.write_report([finished], tmp_path / "out", reps=50, plots=False)
    assert "9.00*" in (tmp_path / "out" / "report.md").read_text()
    assert result["runs"][0]["window_episodes"] == 0


def test_duplicate_runs_keep_the_longest_then_the_newest(tmp_path):
    # Same configuration and seed: the longer run wins, whatever the folder names say.
    for name, steps in (("a-2", 1000), ("a-1", 3000)):
        write_run(tmp_path, name, algorithm="dqn", task="T", seed=0, episodes=[(steps, float(steps))], env_steps=steps)
    # As long: the newest summary.json wins, not the larger folder name.
    for name, mtime in (("b-new", 2_000_000_000), ("z-old", 1_000_000_000)):
        folder = write_run(
            tmp_path, name, algorithm="dqn", task="T", seed=1, episodes=[(3000, float(mtime))], env_steps=3000
        )
        os.utime(folder / "summary.json", (mtime, mtime))
    result = report.write_report([tmp_path], tmp_path / "out", reps=50, plots=False)
    assert [(Path(r["folder"]).name, r["seed"]) for r in result["runs"]] == [("a-1", 0), ("b-new", 1)]
    dropped = [note for note in result["notes"] if "duplicate" in note]
    assert len(dropped) == 2
    assert dropped[0].startswith(f"{tmp_path.resolve() / 'a-2'}: duplicate of dqn / T / seed 0")
    assert "more environment steps" in dropped[0]
    assert dropped[1].startswith(f"{tmp_path.resolve() / 'z-old'}: duplicate of dqn / T / seed 1")
    assert "newer summary.json" in dropped[1]
    assert "a-2: duplicate" in (tmp_path / "out" / "report.md").read_text()


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


def operators_toml(criterion: str = "global", period: int = 200) -> str:
    """Two operators that both have a `period`, so only `criterion` names itself."""
    return (
        f'[[operators]]\nkind = "prune_select"\nperiod = {period}\ncriterion = "{criterion}"\n\n'
        '[[operators]]\nkind = "target_update"\nperiod = 8000\n'
    )


def write_seeds(
    root: Path, name: str, seeds, *, tail: str, algorithm: str = "eaudedqn", offset: float = 0.0, task: str = "T"
) -> None:
    """Seeds of one configuration; the keys that do not change learning differ per run."""
    for seed in seeds:
        ignored = f'name = "{name}-{seed}"\nout_dir = "out{seed}"\nlog_every = {1000 * (seed + 1)}\nloop = "scan"'
        write_run(
            root,
            f"{name}-{seed}",
            algorithm=algorithm,
            task=task,
            seed=seed,
            episodes=episodes_for(seed, offset),
            env_steps=10_000,
            run_keys=ignored,
            tail=f"{tail}\n[eval]\nevery = {seed * 500}\n\n[run.wandb]\nmode = 'm{seed}'\n",
        )


def test_flatten_config_and_learning_keys():
    flat = report.flatten_config(
        {
            "run": {"seed": 1, "wandb": {"mode": "x"}},
            "network": {"hidden": [1, 2]},
            "operators": [{"kind": "a", "p": 1}, {"kind": "b", "p": 2}],
        }
    )
    assert flat == {
        "run.seed": 1,
        "run.wandb.mode": "x",
        "network.hidden": (1, 2),
        "operators": ("a", "b"),
        "operators.a.p": 1,
        "operators.b.p": 2,
    }
    repeated = report.flatten_config({"operators": [{"kind": "a", "p": 1}, {"kind": "a", "p": 2}]})
    assert repeated == {
        "operators": ("a", "a"),
        "operators.0.kind": "a",
        "operators.0.p": 1,
        "operators.1.kind": "a",
        "operators.1.p": 2,
    }
    assert not any(map(report.is_learning_key, ("run.seed", "run.wandb.mode", "eval.every", "python_path")))
    assert all(map(report.is_learning_key, ("run.total_steps", "evaluation.every", "learner.gamma")))


def test_runs_differing_in_one_key_form_two_named_groups(tmp_path):
    write_seeds(tmp_path, "global", range(3), tail=operators_toml("global"))
    write_seeds(tmp_path, "layer", range(3), tail=operators_toml("layer"), offset=5.0)
    result = report.write_report([tmp_path], tmp_path / "out", reps=100, plots=False)
    # Names, output folders, log period, loop, eval and wandb differ per run: still 3 seeds a group.
    assert [(e["group"], e["runs"]) for e in result["per_task"]] == [
        ("eaudedqn [criterion=global]", 3),
        ("eaudedqn [criterion=layer]", 3),
    ]
    assert result["per_task"][1]["config"] == {"operators.prune_select.criterion": "layer"}
    for row in result["runs"]:
        assert row["group"] == f"eaudedqn [criterion={Path(row['folder']).name.split('-')[0]}]"
    assert not any("duplicate" in note for note in result["notes"])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| T | eaudedqn [criterion=layer] | 3 |" in markdown


def test_group_names_use_full_keys_when_ambiguous_and_never_merge(tmp_path):
    write_seeds(tmp_path, "p100", range(2), tail=operators_toml(period=100))
    write_seeds(tmp_path, "p200", range(2), tail=operators_toml(period=200))
    write_seeds(tmp_path, "dense", range(2), tail="", algorithm="dqn")
    result = report.write_report([tmp_path], tmp_path / "out", reps=50, plots=False)
    assert [e["group"] for e in result["per_task"]] == [
        "dqn",  # the only dqn configuration: nothing to tell apart
        "eaudedqn [operators.prune_select.period=100]",  # `period` alone would be ambiguous
        "eaudedqn [operators.prune_select.period=200]",
    ]
    # An operator list that differs names the group by the list, not by every field.
    other = tmp_path / "other"
    write_seeds(other, "with", range(2), tail=operators_toml())
    write_seeds(other, "without", range(2), tail="")
    result = report.write_report([other], tmp_path / "out2", reps=50, plots=False)
    assert [e["group"] for e in result["per_task"]] == [
        "eaudedqn [operators=[prune_select, target_update]]",
        "eaudedqn [operators=none]",
    ]
    # One configuration per task: one name, pooled across tasks, and a note on what differs.
    tasks = tmp_path / "tasks"
    write_seeds(tasks, "t", range(2), tail="[learner]\nlearning_rate = 0.001\n", algorithm="dqn")
    write_seeds(tasks, "u", range(2), tail="[learner]\nlearning_rate = 0.0003\n", algorithm="dqn", task="U")
    result = report.write_report([tasks], tmp_path / "out3", reps=50, plots=False)
    assert [(e["task_id"], e["group"]) for e in result["per_task"]] == [("T", "dqn"), ("U", "dqn")]
    assert "dqn: its tasks, pooled when normalised, differ in learner.learning_rate" in result["notes"]


def test_diverged_and_unfinished_runs_are_listed_not_aggregated(tmp_path, capsys):
    for seed in range(3):  # seed 0: a summary from before runs recorded a status
        status = None if seed == 0 else "finished"
        write_run(
            tmp_path,
            f"ok-{seed}",
            algorithm="dqn",
            task="T",
            seed=seed,
            episodes=episodes_for(seed, 0),
            env_steps=10_000,
            status=status,
        )
    write_run(
        tmp_path,
        "diverged",
        algorithm="dqn",
        task="T",
        seed=3,
        episodes=[(100, 1.0)],
        env_steps=4000,
        status="non-finite",
    )
    write_run(
        tmp_path, "stopped", algorithm="dqn", task="T", seed=4, episodes=[(100, 1.0)], env_steps=6000, status="stopped"
    )
    write_run(
        tmp_path, "killed", algorithm="dqn", task="T", seed=5, episodes=[(100, 1.0)], env_steps=2000, summary=False
    )
    result = report.write_report([tmp_path], tmp_path / "out", reps=50, plots=False)
    assert sorted(Path(r["folder"]).name for r in result["runs"]) == ["ok-0", "ok-1", "ok-2"]
    assert result["per_task"][0]["runs"] == 3
    excluded = {(Path(r["folder"]).name, r["status"], r["env_steps"], r["seed"]) for r in result["not_aggregated"]}
    assert excluded == {
        ("diverged", "non-finite", 4000, 3),  # identity from pipeline.toml: the summary has none
        ("stopped", "stopped", 6000, 4),
        ("killed", "unfinished (no summary.json)", 2000, 5),
    }
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Runs not aggregated" in markdown
    assert f"| {tmp_path.resolve() / 'diverged'} | dqn | T | 3 | non-finite | 4,000 |" in markdown
    # Nothing that finished: one line, saying how many runs were left out and why.
    args = ["report", str(tmp_path / "diverged"), str(tmp_path / "killed"), "--out", str(tmp_path / "x")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no run can be aggregated: all 2 runs were excluded" in err
    assert "1 non-finite, 1 unfinished (no summary.json)" in err


def test_group_by_merges_groups_and_names_them(tmp_path, capsys):
    for criterion in ("global", "layer"):
        for period in (100, 200):
            write_seeds(tmp_path, f"{criterion}_{period}", range(2), tail=operators_toml(criterion, period))
    default = report.write_report([tmp_path], tmp_path / "a", reps=50, plots=False)
    assert [e["group"] for e in default["per_task"]][:2] == [
        "eaudedqn [criterion=global, operators.prune_select.period=100]",
        "eaudedqn [criterion=global, operators.prune_select.period=200]",
    ]
    for key in ("criterion", "operators.prune_select.criterion"):
        merged = report.write_report([tmp_path], tmp_path / "b", reps=50, plots=False, group_by=[key])
        assert [(e["group"], e["runs"], e["seeds"]) for e in merged["per_task"]] == [
            ("eaudedqn [criterion=global]", 4, 4),  # seeds 0, 1 of both periods: not duplicates
            ("eaudedqn [criterion=layer]", 4, 4),
        ]
        assert merged["grouping"]["group_by"] == ["operators.prune_select.criterion"]
        assert any("differ in operators.prune_select.period" in note for note in merged["notes"])
        assert not any("duplicate" in note for note in merged["notes"])
    out = str(tmp_path / "c")
    assert cli_main(["report", str(tmp_path), "--out", out, "--no-plots", "--group-by", "nosuchkey"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--group-by nosuchkey" in err
    assert cli_main(["report", str(tmp_path), "--out", out, "--no-plots", "--group-by", "period"]) == 2
    assert "ambiguous" in capsys.readouterr().err


def test_intervals_from_few_seeds_are_marked(tmp_path, monkeypatch):
    made = {}
    for task, seeds in (("A", 3), ("B", 2), ("C", 1)):
        for seed in range(seeds):
            made[(task, seed)] = episodes_for(seed, 0.0)
            write_run(
                tmp_path,
                f"{task}-{seed}",
                algorithm="dqn",
                task=task,
                seed=seed,
                episodes=made[(task, seed)],
                env_steps=10_000,
            )
    monkeypatch.setattr(
        report, "reference_scores", lambda: {"A": (0.0, 100.0), "B": (0.0, 100.0), "C": (0.0, 100.0)}.get
    )
    result = report.write_report([tmp_path], tmp_path / "out", reps=100)
    by_task = {e["task_id"]: e for e in result["per_task"]}
    assert (by_task["A"]["seeds"], by_task["A"]["interval_reliable"]) == (3, True)
    assert (by_task["B"]["seeds"], by_task["B"]["interval_reliable"]) == (2, False)
    assert by_task["B"]["ci_low"] <= by_task["B"]["iqm"] <= by_task["B"]["ci_high"]
    one = by_task["C"]
    assert (one["seeds"], one["interval_reliable"], one["ci_low"], one["ci_high"]) == (1, False, None, None)
    assert one["iqm"] == pytest.approx(direct_final(made[("C", 0)], 10_000))
    pooled = result["per_algorithm"][0]  # tasks pooled: the fewest seeds of a task count
    assert (pooled["seeds"], pooled["normalised_ci_low"]) == (1, None)
    markdown = (tmp_path / "out" / "report.md").read_text()
    a, b = by_task["A"], by_task["B"]
    assert f"| [{a['ci_low']:,.2f}, {a['ci_high']:,.2f}] |" in markdown
    assert f"| [{b['ci_low']:,.2f}, {b['ci_high']:,.2f}]† |" in markdown
    assert "| C | dqn | 1 |" in markdown and "n/a (1 seed)" in markdown
    assert "† fewer than 3 seeds: the interval is not meaningful" in markdown
    assert (tmp_path / "out" / "returns_C.png").exists()  # plots take single-seed groups too
