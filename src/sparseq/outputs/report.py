"""`sparseq report`: aggregate run folders by algorithm x task x seed.

    sparseq report RUN_OR_DIR [RUN_OR_DIR ...] [--out DIR] [--reps N] [--seed S]

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

Output in DIR (default ./report): report.md (tables), report.json (the numbers),
returns_<task>.png, sparsity_<task>.png (when runs log `sparsity/overall`),
sparsity_vs_score.png, and normalised_iqm.png (Atari, when normalised).

Reading a run needs only its files: summary.json (or pipeline.toml when the run was
killed before writing it), episodes.csv and metrics.jsonl. No JAX is imported.
"""

import csv
import dataclasses
import json
import math
import sys
import tomllib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FINAL_FRACTION = 0.1
SPARSITY_KEY = "sparsity/overall"


class ReportError(Exception):
    """Bad input to `sparseq report`; the message is one line."""


@dataclasses.dataclass(frozen=True)
class RunData:
    folder: Path
    algorithm: str
    task_id: str
    seed: int
    env_steps: int  # final environment step count of the run
    episode_steps: np.ndarray  # (E,) int: env_steps at which each training episode ended
    episode_returns: np.ndarray  # (E,) float: raw undiscounted returns
    sparsity_steps: np.ndarray  # (L,) int: log points that carry `sparsity/overall`
    sparsity: np.ndarray  # (L,) float in [0, 1]


@dataclasses.dataclass(frozen=True)
class RunScore:
    run: RunData
    score: float  # final score (raw return), NaN when the run finished no episode
    normalised: float | None  # human-normalised score, None without reference scores
    window_episodes: int  # episodes in the final window (0: fallback to the last episode)
    final_sparsity: float | None  # last logged sparsity/overall, None for dense runs
    reference: tuple[float, float] | None  # (random, human) scores of the task, if known


# ----------------------------------------------------------------------------- reading


def is_run_folder(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / "episodes.csv").exists()
        and ((path / "summary.json").exists() or (path / "pipeline.toml").exists())
    )


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders named or found (recursively) under `paths`, sorted, without duplicates."""
    found: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise ReportError(f"{path}: no such run folder or directory")
        if is_run_folder(path):
            found.add(path.resolve())
            continue
        if not path.is_dir():
            raise ReportError(f"{path}: not a run folder (no episodes.csv with summary.json or pipeline.toml)")
        for marker in path.rglob("episodes.csv"):
            if is_run_folder(marker.parent):
                found.add(marker.parent.resolve())
    return sorted(found)


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a run killed mid-write may leave a partial last line
    return records


def _identity(folder: Path) -> tuple[str, str, int, int | None]:
    """(algorithm, task_id, seed, env_steps or None) from summary.json, else pipeline.toml."""
    summary_path = folder / "summary.json"
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
            return str(summary["algorithm"]), str(summary["task_id"]), int(summary["seed"]), summary.get("env_steps")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ReportError(f"{summary_path}: unreadable summary ({error})") from None
    try:
        with (folder / "pipeline.toml").open("rb") as handle:
            config = tomllib.load(handle)
        return (
            str(config.get("algorithm", "dqn")),
            str(config.get("env", {}).get("task_id", "CartPole-v1")),
            int(config.get("run", {}).get("seed", 0)),
            None,
        )
    except (tomllib.TOMLDecodeError, OSError, ValueError) as error:
        raise ReportError(f"{folder / 'pipeline.toml'}: unreadable pipeline file ({error})") from None


def read_run(folder: Path) -> RunData:
    algorithm, task_id, seed, env_steps = _identity(folder)
    steps, returns = [], []
    with (folder / "episodes.csv").open() as handle:
        for row in csv.DictReader(handle):
            try:
                steps.append(int(row["env_steps"]))
                returns.append(float(row["episode_return"]))
            except (KeyError, TypeError, ValueError):
                continue
    records = _read_json_lines(folder / "metrics.jsonl")
    sparse = [(int(r["env_steps"]), float(r[SPARSITY_KEY])) for r in records if r.get(SPARSITY_KEY) is not None]
    if env_steps is None:  # killed run: the last log point or episode is as far as it got
        env_steps = max([int(r.get("env_steps", 0)) for r in records] + steps + [0])
    return RunData(
        folder=folder,
        algorithm=algorithm,
        task_id=task_id,
        seed=seed,
        env_steps=int(env_steps),
        episode_steps=np.asarray(steps, dtype=np.int64),
        episode_returns=np.asarray(returns, dtype=np.float64),
        sparsity_steps=np.asarray([s for s, _ in sparse], dtype=np.int64),
        sparsity=np.asarray([v for _, v in sparse], dtype=np.float64),
    )


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


def score_runs(runs: Sequence[RunData], references: Callable[[str], tuple[float, float] | None]) -> list[RunScore]:
    scored = []
    for run in runs:
        score, window = final_score(run.episode_steps, run.episode_returns, run.env_steps)
        reference = references(run.task_id)
        normalised = None if math.isnan(score) else normalise(score, reference)
        sparsity = float(run.sparsity[-1]) if len(run.sparsity) else None
        scored.append(RunScore(run, score, normalised, window, sparsity, reference))
    return scored


def deduplicate(runs: Sequence[RunData]) -> tuple[list[RunData], list[RunData]]:
    """One run per (algorithm, task, seed): the one that went furthest, then the latest
    folder name (names end in a timestamp). Returns (kept, dropped)."""
    best: dict[tuple[str, str, int], RunData] = {}
    for run in runs:
        key = (run.algorithm, run.task_id, run.seed)
        if key not in best or (run.env_steps, run.folder.name) > (best[key].env_steps, best[key].folder.name):
            best[key] = run
    kept = sorted(best.values(), key=lambda r: (r.algorithm, r.task_id, r.seed))
    dropped = [r for r in runs if best[(r.algorithm, r.task_id, r.seed)] is not r]
    return kept, dropped


# ----------------------------------------------------------------------------- statistics


def iqm(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Interquartile mean (25% trimmed on each side), rliable's definition."""
    from scipy.stats import trim_mean

    return trim_mean(values, 0.25, axis=axis)


def bootstrap_iqm(groups: Sequence[np.ndarray], reps: int = 5000, seed: int = 0) -> tuple[Any, Any, Any]:
    """IQM over all runs pooled, with a 95% stratified-bootstrap interval.

    groups: one array per task (stratum), shaped (runs_t, *rest); runs are resampled
    with replacement within each task. Returns (point, low, high), each shaped `rest`.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    rest = groups[0].shape[1:]
    point = iqm(np.concatenate(groups, axis=0), axis=0)
    if len({len(g) for g in groups}) == 1:
        low, high = _rliable_interval(np.stack(groups, axis=1), reps, seed)  # (runs, tasks, *rest)
    else:
        low, high = _numpy_interval(groups, reps, seed)
    return point, np.reshape(low, rest), np.reshape(high, rest)


def _rliable_interval(scores: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from rliable import library as rly

    runs, tasks = scores.shape[:2]

    def pooled_iqm(x: np.ndarray) -> np.ndarray:
        return np.atleast_1d(iqm(x.reshape(runs * tasks, -1), axis=0))

    # rliable draws from NumPy's global generator: seed it for reproducible intervals and
    # put the caller's state back afterwards.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch's random_state deprecation
            _, intervals = rly.get_interval_estimates({"x": scores}, pooled_iqm, reps=reps)
    finally:
        np.random.set_state(saved)
    interval = intervals["x"]  # (2, prod(rest))
    return interval[0], interval[1]


def _numpy_interval(groups: Sequence[np.ndarray], reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(reps):
        sample = [g[rng.integers(0, len(g), len(g))] for g in groups]
        stats.append(iqm(np.concatenate(sample, axis=0), axis=0))
    low, high = np.percentile(np.asarray(stats), [2.5, 97.5], axis=0)
    return low, high


# ----------------------------------------------------------------------------- aggregation


def aggregate(scored: Sequence[RunScore], reps: int, seed: int) -> dict[str, Any]:
    """Per task x algorithm (raw scores) and per algorithm (normalised, when every task
    of the algorithm has reference scores) IQM with 95% intervals."""
    per_task = []
    for (task, algorithm), rows in _group(scored, lambda s: (s.run.task_id, s.run.algorithm)).items():
        scores = np.asarray([s.score for s in rows if not math.isnan(s.score)])
        entry = {"task_id": task, "algorithm": algorithm, "runs": len(rows), "scored_runs": len(scores)}
        if len(scores):
            point, low, high = bootstrap_iqm([scores], reps, seed)
            entry.update(iqm=float(point), ci_low=float(low), ci_high=float(high), mean=float(scores.mean()))
            normalised = [s.normalised for s in rows if s.normalised is not None]
            if len(normalised) == len(scores):
                point, low, high = bootstrap_iqm([np.asarray(normalised)], reps, seed)
                entry.update(normalised_iqm=float(point), normalised_ci_low=float(low), normalised_ci_high=float(high))
        entry["final_sparsity"] = _mean_sparsity(rows)
        per_task.append(entry)
    per_algorithm = []
    for algorithm, rows in _group(scored, lambda s: s.run.algorithm).items():
        entry = {
            "algorithm": algorithm,
            "tasks": len({s.run.task_id for s in rows}),
            "runs": len(rows),
            "final_sparsity": _mean_sparsity(rows),
        }
        usable = [s for s in rows if not math.isnan(s.score)]
        if usable and all(s.normalised is not None for s in usable):
            by_task = _group(usable, lambda s: s.run.task_id)
            groups = [np.asarray([s.normalised for s in task_rows]) for task_rows in by_task.values()]
            point, low, high = bootstrap_iqm(groups, reps, seed)
            entry.update(normalised_iqm=float(point), normalised_ci_low=float(low), normalised_ci_high=float(high))
        per_algorithm.append(entry)
    return {"per_task": per_task, "per_algorithm": per_algorithm}


def _group(rows: Sequence[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return dict(sorted(groups.items()))


def _mean_sparsity(rows: Sequence[RunScore]) -> float | None:
    values = [s.final_sparsity for s in rows if s.final_sparsity is not None]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- writing


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _interval(entry: dict[str, Any], prefix: str = "") -> str:
    low, high = entry.get(f"{prefix}ci_low"), entry.get(f"{prefix}ci_high")
    return "-" if low is None else f"[{_fmt(low)}, {_fmt(high)}]"


def _sparsity(value: float | None) -> str:
    return "dense" if value is None else f"{100 * value:.1f}%"


def markdown(scored: Sequence[RunScore], tables: dict[str, Any], notes: Sequence[str], plots: Sequence[Path]) -> str:
    lines = [
        "# sparseq report",
        "",
        f"{len(scored)} runs. Final score: mean training return (raw rewards, undiscounted) of the episodes "
        f"ending in the last {FINAL_FRACTION:.0%} of each run's environment steps (`*`: none did; the last "
        "episode is used). IQM = interquartile mean over runs; intervals are 95% stratified-bootstrap "
        "(percentile) intervals over seeds.",
        "",
    ]
    normalised_rows = [e for e in tables["per_algorithm"] if "normalised_iqm" in e]
    if normalised_rows:
        lines += [
            "## Per algorithm (human-normalised, tasks x seeds pooled)",
            "",
            "| algorithm | tasks | runs | IQM | 95% CI | final sparsity |",
            "|---|---:|---:|---:|---|---:|",
        ]
        for e in normalised_rows:
            lines.append(
                f"| {e['algorithm']} | {e['tasks']} | {e['runs']} | {_fmt(e['normalised_iqm'], 3)} "
                f"| {_interval(e, 'normalised_')} | {_sparsity(e['final_sparsity'])} |"
            )
        lines.append("")
    lines += [
        "## Per task (raw returns)",
        "",
        "| task | algorithm | seeds | IQM | 95% CI | mean | normalised IQM | final sparsity |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for e in tables["per_task"]:
        lines.append(
            f"| {e['task_id']} | {e['algorithm']} | {e['runs']} | {_fmt(e.get('iqm'))} | {_interval(e)} "
            f"| {_fmt(e.get('mean'))} | {_fmt(e.get('normalised_iqm'), 3)} | {_sparsity(e['final_sparsity'])} |"
        )
    lines += [
        "",
        "## Runs",
        "",
        "| algorithm | task | seed | env steps | final score | episodes in window | final sparsity | folder |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in scored:
        mark = "*" if s.window_episodes == 0 and not math.isnan(s.score) else ""
        lines.append(
            f"| {s.run.algorithm} | {s.run.task_id} | {s.run.seed} | {s.run.env_steps:,} | {_fmt(s.score)}{mark} "
            f"| {s.window_episodes} | {_sparsity(s.final_sparsity)} | {s.run.folder} |"
        )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_report(
    paths: Sequence[Path], out: Path, *, reps: int = 5000, seed: int = 0, plots: bool = True
) -> dict[str, Any]:
    """Reads every run under `paths`, writes out/report.md, report.json and the plots.
    Returns the report.json content."""
    folders = find_runs(paths)
    if not folders:
        raise ReportError(f"no run folders under {', '.join(str(p) for p in paths)}")
    runs, dropped = deduplicate([read_run(f) for f in folders])
    notes = [
        f"{d.folder}: duplicate of {d.algorithm} / {d.task_id} / seed {d.seed}; the longer/later run is used"
        for d in dropped
    ]
    references = reference_scores()
    scored = score_runs(runs, references)
    notes += [f"{s.run.folder}: no finished episode, left out of the aggregates" for s in scored if math.isnan(s.score)]
    atari_unnormalised = sorted(
        {s.run.task_id for s in scored if s.run.task_id.endswith("-v5") and s.normalised is None}
    )
    if atari_unnormalised:
        notes.append(f"no reference scores for {', '.join(atari_unnormalised)}: not human-normalised")
    tables = aggregate(scored, reps, seed)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plots:
        from sparseq.outputs.report_plots import write_plots

        written = write_plots(scored, out, reps=min(reps, 1000), seed=seed)
    result = {
        "final_fraction": FINAL_FRACTION,
        "runs": [
            {
                "folder": str(s.run.folder),
                "algorithm": s.run.algorithm,
                "task_id": s.run.task_id,
                "seed": s.run.seed,
                "env_steps": s.run.env_steps,
                "final_score": None if math.isnan(s.score) else s.score,
                "normalised_score": s.normalised,
                "window_episodes": s.window_episodes,
                "final_sparsity": s.final_sparsity,
            }
            for s in scored
        ],
        **tables,
        "plots": [p.name for p in written],
        "notes": notes,
    }
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(markdown(scored, tables, notes, written))
    return result


def main(args: list[str]) -> int:
    from sparseq.outputs.args import OneLineParser, UsageError

    parser = OneLineParser(prog="sparseq report", description="IQM tables and plots over run folders.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_DIR")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: ./report)")
    parser.add_argument("--reps", type=int, default=5000, help="bootstrap resamples (default: 5000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    try:
        options = parser.parse_args(args)
        if options.reps < 1:
            raise ReportError(f"--reps must be >= 1, got {options.reps}")
        result = write_report(
            options.paths, options.out, reps=options.reps, seed=options.seed, plots=not options.no_plots
        )
    except (ReportError, UsageError) as error:
        print(f"sparseq: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(result['runs'])} runs -> {options.out / 'report.md'}")
    for entry in result["per_task"]:
        print(
            f"  {entry['task_id']:<24} {entry['algorithm']:<12} seeds {entry['runs']:>2}  "
            f"IQM {_fmt(entry.get('iqm'))}  95% CI {_interval(entry)}"
        )
    for entry in result["per_algorithm"]:
        if "normalised_iqm" in entry:
            print(f"  {'(human-normalised)':<24} {entry['algorithm']:<12} IQM {_fmt(entry['normalised_iqm'], 3)}")
    return 0
