"""`sparseq report`: aggregate run folders by configuration group x task x seed.

    sparseq report RUN_OR_DIR [RUN_OR_DIR ...] [--out DIR] [--group-by KEY [KEY ...]]
                   [--reps N] [--seed S] [--no-plots]
                   [--wandb [--wandb-mode offline|online] [--wandb-project P]]

Groups (which runs are seeds of the same experiment):
- Runs are grouped by their resolved configuration (pipeline.toml, flattened to dotted
  keys; `[[operators]]` as `operators.<kind>.<key>`) minus the seed and the keys that do
  not change learning (NON_LEARNING_KEYS). A group is named by its algorithm plus the keys
  in which it differs from the other groups of that algorithm on the same task, e.g.
  `eaudedqn [criterion=global]` and `eaudedqn [criterion=layer]` (the union of those keys
  over tasks, so that a name means one setting on every task). Groups are never merged;
  the human-normalised table pools the tasks of one name, and the notes say when their
  configurations differ in more than the env section.
- `--group-by KEY ...` groups by algorithm, task and the values of those keys instead
  (named `label [key=value, ...]`); the notes say which keys vary inside a merged group.
- Two runs of one group with the same seed are reruns: the one with the most environment
  steps is kept, then the one whose summary.json is newest; the notes list the others.
- Runs that did not finish (summary.json status other than "finished": "non-finite",
  "stopped"; or no summary.json) are left out of the aggregates and listed apart.

Scores (how results are judged, design/ALGORITHMS.md):
- A run's final score is the mean undiscounted training return (raw rewards) of the
  episodes that END in the last 10% of the run's environment steps. Training episodes
  are epsilon-greedy, so this is the "training return" of the Dopamine protocol. When no
  episode ends in that window (very long episodes, very short runs) the run's last
  finished episode is used and the table marks the score with `*`.
- Atari tasks are human-normalised, (score - random) / (human - random), with the
  reference scores of envs/atari/reference_scores.toml (tasks without them are not).
- Aggregates are the interquartile mean (IQM) over all runs (tasks x seeds pooled) with
  a 95% percentile stratified-bootstrap interval (runs resampled within each task;
  Agarwal et al. 2021), computed with rliable when every task has the same number of
  seeds, and with the same procedure in numpy otherwise (rliable needs a full matrix).
  Across tasks only normalised scores are pooled; raw returns are aggregated per task.
  Intervals over fewer than MIN_SEEDS seeds are marked `†`; with one seed there is none.

Output in DIR (default ./report): report.md (tables), report.json (the numbers),
returns_<task>.png, sparsity_<task>.png (when runs log `sparsity/overall`),
sparsity_vs_score.png, and normalised_iqm.png (Atari, when normalised).

With --wandb the tables (wandb.Table) and plots (wandb.Image) also go to one W&B run of
job_type "report" (offline by default: DIR/wandb/), grouped like the runs it covers
(sparseq.outputs.wandb_dashboard); a W&B failure is one warning line, the files are written.

Reading a run needs only its files: pipeline.toml, summary.json (absent when the run was
killed), episodes.csv and metrics.jsonl. No JAX is imported.
"""

import dataclasses
import json
import math
import sys
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparseq.outputs.report_groups import (
    NON_LEARNING_KEYS,
    GroupName,
    cross_task_differences,
    deduplicate,
    is_learning_key,
    name_by_configuration,
    name_by_keys,
    pooled_differences,
    resolve_keys,
    split_finished,
)
from sparseq.outputs.report_runs import (
    FINAL_FRACTION,
    MIN_SEEDS,
    SPARSITY_KEY,
    ReportError,
    RunData,
    find_runs,
    flatten_config,
    group_rows,
    read_run,
)
from sparseq.outputs.report_stats import bootstrap_iqm, iqm

__all__ = [
    "FINAL_FRACTION",
    "SPARSITY_KEY",
    "ReportError",
    "RunData",
    "bootstrap_iqm",
    "flatten_config",
    "is_learning_key",
    "read_run",
    "write_report",
]


@dataclasses.dataclass(frozen=True)
class RunScore:
    run: RunData
    score: float  # final score (raw return), NaN when the run finished no episode
    normalised: float | None  # human-normalised score, None without reference scores
    window_episodes: int  # episodes in the final window (0: fallback to the last episode)
    final_sparsity: float | None  # last logged sparsity/overall, None for dense runs
    reference: tuple[float, float] | None  # (random, human) scores of the task, if known
    group: str = ""  # the group's name, e.g. "eaudedqn [criterion=global]"


# ----------------------------------------------------------------------------- scores


def final_score(
    episode_steps: np.ndarray, episode_returns: np.ndarray, env_steps: int, fraction: float = FINAL_FRACTION
) -> tuple[float, int]:
    """Mean return of the episodes ending after (1 - fraction) * env_steps.

    episode_steps, episode_returns: (E,). Returns (score, episodes in the window); with
    no episode in the window, (last episode's return, 0); with no episode at all, (nan, 0).
    """
    if len(episode_returns) == 0:
        return math.nan, 0
    in_window = episode_steps > (1.0 - fraction) * env_steps
    if not in_window.any():
        return float(episode_returns[-1]), 0
    return float(episode_returns[in_window].mean()), int(in_window.sum())


def reference_scores() -> Callable[[str], tuple[float, float] | None]:
    """task_id -> (random, human) reference scores, or None for a task without them.

    Read from envs/atari/reference_scores.toml (`[scores] Pong-v5 = {random, human}`).
    """
    from sparseq.pipeline.config.paths import presets_dir

    path = presets_dir() / "atari" / "reference_scores.toml"
    table: dict[str, tuple[float, float]] = {}
    if path.exists():
        try:
            with path.open("rb") as handle:
                rows = tomllib.load(handle).get("scores", {})
            table = {task: (float(row["random"]), float(row["human"])) for task, row in rows.items()}
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
            raise ReportError(f"{path}: unreadable reference scores ({error})") from None
    return table.get


def normalise(score: Any, reference: tuple[float, float] | None) -> Any:
    """(score - random) / (human - random); score may be an array. None without reference."""
    if reference is None:
        return None
    random_score, human_score = reference
    return (score - random_score) / (human_score - random_score)


def score_runs(
    runs: Sequence[RunData],
    references: Callable[[str], tuple[float, float] | None],
    names: Mapping[Path, str] | None = None,
) -> list[RunScore]:
    """Final scores; `names` maps a run folder to its group's name (default: the algorithm)."""
    scored = []
    for run in runs:
        score, window = final_score(run.episode_steps, run.episode_returns, run.env_steps)
        reference = references(run.task_id)
        normalised = None if math.isnan(score) else normalise(score, reference)
        sparsity = float(run.sparsity[-1]) if len(run.sparsity) else None
        group = (names or {}).get(run.folder, run.algorithm)
        scored.append(RunScore(run, score, normalised, window, sparsity, reference, group))
    return scored


# ----------------------------------------------------------------------------- aggregation


def aggregate(scored: Sequence[RunScore], reps: int, seed: int) -> dict[str, Any]:
    """Per task x group (raw scores) and per group (normalised, when every task of the
    group has reference scores) IQM with 95% intervals."""
    per_task = [
        _task_entry(task, rows, reps, seed)
        for (task, _), rows in group_rows(scored, lambda s: (s.run.task_id, s.group)).items()
    ]
    per_algorithm = [_pooled_entry(rows, reps, seed) for rows in group_rows(scored, lambda s: s.group).values()]
    return {"per_task": per_task, "per_algorithm": per_algorithm}


def _task_entry(task: str, rows: Sequence[RunScore], reps: int, seed: int) -> dict[str, Any]:
    scores = np.asarray([s.score for s in rows if not math.isnan(s.score)])
    entry: dict[str, Any] = {
        "task_id": task,
        "group": rows[0].group,
        "algorithm": rows[0].run.algorithm,
        "runs": len(rows),
        "scored_runs": len(scores),
    }
    if len(scores):
        entry.update(_seeds(len(scores)))  # one run per seed (per seed and configuration with --group-by)
        entry.update(_estimate([scores], reps, seed), mean=float(scores.mean()))
        normalised = [s.normalised for s in rows if s.normalised is not None]
        if len(normalised) == len(scores):
            entry.update(_estimate([np.asarray(normalised)], reps, seed, "normalised_"))
    entry["final_sparsity"] = _mean_sparsity(rows)
    return entry


def _pooled_entry(rows: Sequence[RunScore], reps: int, seed: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "group": rows[0].group,
        "algorithm": rows[0].run.algorithm,
        "tasks": len({s.run.task_id for s in rows}),
        "runs": len(rows),
        "final_sparsity": _mean_sparsity(rows),
    }
    usable = [s for s in rows if not math.isnan(s.score)]
    if usable and all(s.normalised is not None for s in usable):
        by_task = group_rows(usable, lambda s: s.run.task_id)
        groups = [np.asarray([s.normalised for s in task_rows]) for task_rows in by_task.values()]
        entry.update(_seeds(min(len(g) for g in groups)))  # the fewest seeds of a task
        entry.update(_estimate(groups, reps, seed, "normalised_"))
    return entry


def _seeds(seeds: int) -> dict[str, Any]:
    return {"seeds": seeds, "interval_reliable": seeds >= MIN_SEEDS}


def _estimate(groups: Sequence[np.ndarray], reps: int, seed: int, prefix: str = "") -> dict[str, float | None]:
    """{prefix}iqm, {prefix}ci_low, {prefix}ci_high over per-task `groups`; no interval
    (None) when a task has a single seed: resampling one run says nothing."""
    if min(len(g) for g in groups) < 2:
        point = float(iqm(np.concatenate(groups, axis=0)))
        return {f"{prefix}iqm": point, f"{prefix}ci_low": None, f"{prefix}ci_high": None}
    point, low, high = bootstrap_iqm(groups, reps, seed)
    return {f"{prefix}iqm": float(point), f"{prefix}ci_low": float(low), f"{prefix}ci_high": float(high)}


def _mean_sparsity(rows: Sequence[RunScore]) -> float | None:
    values = [s.final_sparsity for s in rows if s.final_sparsity is not None]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- writing

UNRELIABLE_NOTE = f"† fewer than {MIN_SEEDS} seeds: the interval is not meaningful."


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _interval(entry: dict[str, Any], prefix: str = "") -> str:
    """`[low, high]`, marked `†` below MIN_SEEDS seeds; `n/a (1 seed)`; `-` without scores."""
    if entry.get("seeds") == 1:
        return "n/a (1 seed)"
    low, high = entry.get(f"{prefix}ci_low"), entry.get(f"{prefix}ci_high")
    if low is None:
        return "-"
    mark = "" if entry.get("interval_reliable", True) else "†"
    return f"[{_fmt(low)}, {_fmt(high)}]{mark}"


def _footnote(entries: Sequence[dict[str, Any]]) -> list[str]:
    marked = any(1 < e.get("seeds", MIN_SEEDS) < MIN_SEEDS for e in entries)
    return ["", UNRELIABLE_NOTE] if marked else []


def _sparsity(value: float | None) -> str:
    return "dense" if value is None else f"{100 * value:.1f}%"


def _grouping_text(group_by: Sequence[str] | None) -> str:
    if group_by:
        return f"Runs are grouped by algorithm, task and {', '.join(f'`{k}`' for k in group_by)} (--group-by)."
    return (
        "Runs are grouped by their resolved configuration (pipeline.toml) except the seed and the keys "
        f"that do not change learning ({', '.join(f'`{k}`' for k in NON_LEARNING_KEYS)}); a group is named "
        "by its algorithm and the keys in which it differs from the algorithm's other groups on a task."
    )


def _header(scored: Sequence[RunScore], group_by: Sequence[str] | None) -> list[str]:
    return [
        "# sparseq report",
        "",
        f"{len(scored)} runs. Final score: mean training return (raw rewards, undiscounted) of the episodes "
        f"ending in the last {FINAL_FRACTION:.0%} of each run's environment steps (`*`: none did; the last "
        "episode is used). IQM = interquartile mean over runs; intervals are 95% stratified-bootstrap "
        "(percentile) intervals over seeds.",
        "",
        _grouping_text(group_by),
        "",
    ]


def _per_algorithm_table(tables: dict[str, Any]) -> list[str]:
    rows = [e for e in tables["per_algorithm"] if "normalised_iqm" in e]
    if not rows:
        return []
    lines = [
        "## Per algorithm (human-normalised, tasks x seeds pooled)",
        "",
        "| group | tasks | runs | IQM | 95% CI | final sparsity |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for e in rows:
        lines.append(
            f"| {e['group']} | {e['tasks']} | {e['runs']} | {_fmt(e['normalised_iqm'], 3)} "
            f"| {_interval(e, 'normalised_')} | {_sparsity(e['final_sparsity'])} |"
        )
    return [*lines, *_footnote(rows), ""]


def _per_task_table(tables: dict[str, Any]) -> list[str]:
    lines = [
        "## Per task (raw returns)",
        "",
        "| task | group | seeds | IQM | 95% CI | mean | normalised IQM | final sparsity |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for e in tables["per_task"]:
        lines.append(
            f"| {e['task_id']} | {e['group']} | {e['runs']} | {_fmt(e.get('iqm'))} | {_interval(e)} "
            f"| {_fmt(e.get('mean'))} | {_fmt(e.get('normalised_iqm'), 3)} | {_sparsity(e['final_sparsity'])} |"
        )
    return lines + _footnote(tables["per_task"])


def _runs_table(scored: Sequence[RunScore]) -> list[str]:
    lines = [
        "## Runs",
        "",
        "| group | task | seed | env steps | final score | episodes in window | final sparsity | folder |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in scored:
        mark = "*" if s.window_episodes == 0 and not math.isnan(s.score) else ""
        lines.append(
            f"| {s.group} | {s.run.task_id} | {s.run.seed} | {s.run.env_steps:,} | {_fmt(s.score)}{mark} "
            f"| {s.window_episodes} | {_sparsity(s.final_sparsity)} | {s.run.folder} |"
        )
    return lines


def _excluded_table(excluded: Sequence[RunData]) -> list[str]:
    if not excluded:
        return []
    lines = [
        "## Runs not aggregated",
        "",
        "Diverged or unfinished runs: left out of every table above and of the plots.",
        "",
        "| folder | algorithm | task | seed | status | env steps |",
        "|---|---|---|---:|---|---:|",
    ]
    for r in excluded:
        lines.append(f"| {r.folder} | {r.algorithm} | {r.task_id} | {r.seed} | {r.status} | {r.env_steps:,} |")
    return ["", *lines]


def markdown(
    scored: Sequence[RunScore],
    tables: dict[str, Any],
    notes: Sequence[str],
    plots: Sequence[Path],
    excluded: Sequence[RunData] = (),
    group_by: Sequence[str] | None = None,
) -> str:
    lines = _header(scored, group_by) + _per_algorithm_table(tables) + _per_task_table(tables)
    lines += ["", *_runs_table(scored), *_excluded_table(excluded)]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _nothing_to_aggregate(excluded: Sequence[RunData]) -> ReportError:
    counts = Counter(r.status for r in excluded)
    reasons = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    runs = "1 run was" if len(excluded) == 1 else f"all {len(excluded)} runs were"
    return ReportError(f"no run can be aggregated: {runs} excluded as not finished ({reasons})")


def _duplicate_notes(dropped: Sequence[tuple[RunData, RunData]], groups: Mapping[Path, GroupName]) -> list[str]:
    notes = []
    for run, kept in dropped:
        if kept.env_steps > run.env_steps:
            why = "more environment steps"
        elif kept.summary_mtime > run.summary_mtime:
            why = "as long, newer summary.json"
        else:
            why = "as long and as new; folder order"
        name = groups[kept.folder][0]
        notes.append(
            f"{run.folder}: duplicate of {name} / {run.task_id} / seed {run.seed}, dropped; "
            f"{kept.folder} is used ({why})"
        )
    return notes


def _run_record(s: RunScore) -> dict[str, Any]:
    return {
        "folder": str(s.run.folder),
        "group": s.group,
        "algorithm": s.run.algorithm,
        "task_id": s.run.task_id,
        "seed": s.run.seed,
        "env_steps": s.run.env_steps,
        "final_score": None if math.isnan(s.score) else s.score,
        "normalised_score": s.normalised,
        "window_episodes": s.window_episodes,
        "final_sparsity": s.final_sparsity,
    }


def _excluded_record(r: RunData) -> dict[str, Any]:
    keys = ("algorithm", "task_id", "seed", "status", "env_steps")
    return {"folder": str(r.folder), **{k: getattr(r, k) for k in keys}}


def _add_group_config(tables: dict[str, Any], groups: Mapping[Path, GroupName]) -> None:
    """Each table entry's `config`: the values of the keys naming its group."""
    values = {name: config for name, config in groups.values()}
    for entry in tables["per_task"] + tables["per_algorithm"]:
        entry["config"] = values[entry["group"]]


def _group_runs(runs: Sequence[RunData], group_by: Sequence[str] | None) -> tuple[dict[Path, GroupName], list[str]]:
    """folder -> group for the kept runs, plus notes on what a group pools: configurations
    of one task (--group-by), or tasks whose configurations differ outside [env]."""
    if not group_by:
        groups = name_by_configuration(runs)
        return groups, cross_task_differences(runs, groups)
    groups = name_by_keys(runs, group_by)
    return groups, pooled_differences(runs, groups)


def write_report(
    paths: Sequence[Path],
    out: Path,
    *,
    reps: int = 5000,
    seed: int = 0,
    plots: bool = True,
    group_by: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Reads every run under `paths`, writes out/report.md, report.json and the plots.
    `group_by`: configuration keys to group by instead of the whole configuration.
    Returns the report.json content."""
    folders = find_runs(paths)
    if not folders:
        raise ReportError(f"no run folders under {', '.join(str(p) for p in paths)}")
    runs = [read_run(f) for f in folders]
    keys = resolve_keys(runs, group_by) if group_by else None
    finished, excluded = split_finished(runs)
    if not finished:
        raise _nothing_to_aggregate(excluded)
    kept, dropped = deduplicate(finished)
    groups, notes = _group_runs(kept, keys)
    notes = _duplicate_notes(dropped, groups) + notes
    names = {folder: name for folder, (name, _) in groups.items()}
    scored = score_runs(kept, reference_scores(), names)
    scored.sort(key=lambda s: (s.group, s.run.task_id, s.run.seed, str(s.run.folder)))
    notes += [f"{s.run.folder}: no finished episode, left out of the aggregates" for s in scored if math.isnan(s.score)]
    atari_unnormalised = sorted(
        {s.run.task_id for s in scored if s.run.task_id.endswith("-v5") and s.normalised is None}
    )
    if atari_unnormalised:
        notes.append(f"no reference scores for {', '.join(atari_unnormalised)}: not human-normalised")
    tables = aggregate(scored, reps, seed)
    _add_group_config(tables, groups)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plots:
        from sparseq.outputs.report_plots import write_plots

        written = write_plots(scored, out, reps=min(reps, 1000), seed=seed)
    result = {
        "final_fraction": FINAL_FRACTION,
        "grouping": {"group_by": keys, "non_learning_keys": None if keys else list(NON_LEARNING_KEYS)},
        "runs": [_run_record(s) for s in scored],
        "not_aggregated": [_excluded_record(r) for r in excluded],
        **tables,
        "plots": [p.name for p in written],
        "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(markdown(scored, tables, notes, written, excluded, keys))
    return result


def main(args: list[str]) -> int:
    from sparseq.outputs.args import OneLineParser, UsageError

    parser = OneLineParser(prog="sparseq report", description="IQM tables and plots over run folders.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_DIR")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: ./report)")
    parser.add_argument(
        "--group-by",
        nargs="+",
        metavar="KEY",
        help="group by algorithm, task and these pipeline keys (dotted, or their unambiguous last parts) "
        "instead of the whole configuration",
    )
    parser.add_argument("--reps", type=int, default=5000, help="bootstrap resamples (default: 5000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and plots to a W&B run")
    parser.add_argument(
        "--wandb-mode", choices=("offline", "online"), default="offline", help="with --wandb (default: offline)"
    )
    parser.add_argument("--wandb-project", help="with --wandb (default: the runs' project, else sparseq)")
    try:
        options = parser.parse_args(args)
        if options.reps < 1:
            raise ReportError(f"--reps must be >= 1, got {options.reps}")
        result = write_report(
            options.paths,
            options.out,
            reps=options.reps,
            seed=options.seed,
            plots=not options.no_plots,
            group_by=options.group_by,
        )
    except (ReportError, UsageError) as error:
        print(f"sparseq: error: {error}", file=sys.stderr)
        return 2
    _print_summary(result, options.out)
    if options.wandb:
        from sparseq.outputs.wandb_dashboard import log_report

        settings = {
            "paths": [str(p) for p in options.paths],
            "group_by": options.group_by,
            "reps": options.reps,
            "seed": options.seed,
            "plots": not options.no_plots,
        }
        where = log_report(result, options.out, mode=options.wandb_mode, project=options.wandb_project, config=settings)
        if where:
            print(where)
    return 0


def _print_summary(result: dict[str, Any], out: Path) -> None:
    excluded = len(result["not_aggregated"])
    left_out = f", {excluded} not aggregated (did not finish)" if excluded else ""
    print(f"{len(result['runs'])} runs{left_out} -> {out / 'report.md'}")
    width = max([12, *(len(e["group"]) for e in result["per_task"])])
    for entry in result["per_task"]:
        print(
            f"  {entry['task_id']:<24} {entry['group']:<{width}} seeds {entry['runs']:>2}  "
            f"IQM {_fmt(entry.get('iqm'))}  95% CI {_interval(entry)}"
        )
    for entry in result["per_algorithm"]:
        if "normalised_iqm" in entry:
            print(f"  {'(human-normalised)':<24} {entry['group']:<{width}} IQM {_fmt(entry['normalised_iqm'], 3)}")
