"""`sparseq report`: aggregate run folders by configuration group x task x seed.

    sparseq report RUN_OR_DIR [RUN_OR_DIR ...] [--out DIR] [--group-by KEY [KEY ...]]
                   [--reps N] [--seed S] [--no-plots]

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

Reading a run needs only its files: pipeline.toml, summary.json (absent when the run was
killed), episodes.csv and metrics.jsonl. No JAX is imported.
"""

import csv
import dataclasses
import itertools
import json
import math
import sys
import tomllib
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FINAL_FRACTION = 0.1
SPARSITY_KEY = "sparsity/overall"
MIN_SEEDS = 3  # intervals over fewer seeds are marked as not meaningful
FINISHED = "finished"
NO_SUMMARY = "unfinished (no summary.json)"

# Configuration keys that do not change what a run learns, left out when runs are grouped
# (a trailing ".*" matches every key below it). The seed is what a group aggregates over.
# Names, output and checkpoint locations, progress display, logging period, wandb and
# checkpoint retention only change what is written; chunk_seconds only bounds how long
# one jitted call runs (the chunk length is an argument of the same loop). The
# checkpoint_every boundaries re-seed the pools: that only redraws randomness, like a
# seed. The loop flavour (scan or cycle) computes the same updates. Evaluation runs on
# its own pool and is never trained on; python_path only says where plugins come from.
# run.total_steps is NOT here: a longer run is a different experiment.
NON_LEARNING_KEYS = (
    "run.seed",
    "run.name",
    "run.out_dir",
    "run.checkpoint_dir",
    "run.progress",
    "run.wandb.*",
    "run.log_every",
    "run.chunk_seconds",
    "run.keep_checkpoints",
    "run.checkpoint_every",
    "run.loop",
    "eval.*",
    "python_path",
)


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
    status: str = FINISHED  # summary.json "status", or NO_SUMMARY
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # flattened pipeline.toml
    summary_mtime: float = 0.0  # modification time of summary.json (0 without one)


@dataclasses.dataclass(frozen=True)
class RunScore:
    run: RunData
    score: float  # final score (raw return), NaN when the run finished no episode
    normalised: float | None  # human-normalised score, None without reference scores
    window_episodes: int  # episodes in the final window (0: fallback to the last episode)
    final_sparsity: float | None  # last logged sparsity/overall, None for dense runs
    reference: tuple[float, float] | None  # (random, human) scores of the task, if known
    group: str = ""  # the group's name, e.g. "eaudedqn [criterion=global]"


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


def flatten_config(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A TOML table as {dotted key: hashable value}.

    A list of tables (`[[operators]]`) becomes `<key>` = tuple of their kinds plus
    `<key>.<kind>.<field>`, or `<key>.<index>.<field>` (kind included) when a kind repeats
    or a table has none. Other lists become tuples.
    """
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{dotted}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            flat.update(_flatten_tables(value, dotted))
        else:
            flat[dotted] = _hashable(value)
    return flat


def _flatten_tables(tables: list[dict[str, Any]], dotted: str) -> dict[str, Any]:
    kinds = [str(t.get("kind", i)) for i, t in enumerate(tables)]
    by_kind = len(set(kinds)) == len(kinds) and all("kind" in t for t in tables)
    flat: dict[str, Any] = {dotted: tuple(kinds)}
    for index, (kind, table) in enumerate(zip(kinds, tables)):
        fields = {k: v for k, v in table.items() if not (by_kind and k == "kind")}
        flat.update(flatten_config(fields, f"{dotted}.{kind if by_kind else index}."))
    return flat


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return value


def _read_config(folder: Path) -> dict[str, Any]:
    """Flattened pipeline.toml, {} when the folder has none."""
    path = folder / "pipeline.toml"
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            return flatten_config(tomllib.load(handle))
    except (tomllib.TOMLDecodeError, OSError, ValueError) as error:
        raise ReportError(f"{path}: unreadable pipeline file ({error})") from None


def _read_summary(folder: Path) -> dict[str, Any] | None:
    """summary.json, None when the run was killed before writing it."""
    path = folder / "summary.json"
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as error:
        raise ReportError(f"{path}: unreadable summary ({error})") from None
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: unreadable summary (not a JSON object)")
    return summary


def _identity(folder: Path, summary: dict[str, Any] | None, config: Mapping[str, Any]) -> tuple[str, str, int]:
    """(algorithm, task_id, seed) from summary.json, else pipeline.toml (a diverged run's
    summary carries only its status and env_steps)."""
    summary = summary or {}
    try:
        return (
            str(summary.get("algorithm", config.get("algorithm", "dqn"))),
            str(summary.get("task_id", config.get("env.task_id", "CartPole-v1"))),
            int(summary.get("seed", config.get("run.seed", 0))),
        )
    except (TypeError, ValueError) as error:
        raise ReportError(f"{folder}: unreadable seed ({error})") from None


def _status(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return NO_SUMMARY
    # Summaries written before runs recorded a status were only written by finished runs.
    return str(summary.get("status", FINISHED))


def read_run(folder: Path) -> RunData:
    summary, config = _read_summary(folder), _read_config(folder)
    algorithm, task_id, seed = _identity(folder, summary, config)
    env_steps = (summary or {}).get("env_steps")
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
        status=_status(summary),
        config=config,
        summary_mtime=(folder / "summary.json").stat().st_mtime if summary is not None else 0.0,
    )


# ----------------------------------------------------------------------------- grouping

ConfigKey = tuple[str, str, tuple[tuple[str, Any], ...]]
GroupName = tuple[str, dict[str, Any]]  # (name, {dotted key: value} of the keys naming it)


def is_learning_key(key: str) -> bool:
    """False for the keys NON_LEARNING_KEYS names."""
    return not any(
        key == pattern or (pattern.endswith(".*") and key.startswith(pattern[:-1])) for pattern in NON_LEARNING_KEYS
    )


def learning_config(run: RunData) -> tuple[tuple[str, Any], ...]:
    """Sorted (dotted key, value) pairs of the run's configuration that change learning."""
    return tuple(sorted((k, v) for k, v in run.config.items() if is_learning_key(k)))


def config_key(run: RunData) -> ConfigKey:
    """Equal for runs that are seeds (or reruns) of one configuration."""
    return run.algorithm, run.task_id, learning_config(run)


def split_finished(runs: Sequence[RunData]) -> tuple[list[RunData], list[RunData]]:
    """(finished runs, the others: diverged, stopped, killed)."""
    return [r for r in runs if r.status == FINISHED], [r for r in runs if r.status != FINISHED]


def deduplicate(runs: Sequence[RunData]) -> tuple[list[RunData], list[tuple[RunData, RunData]]]:
    """One run per (configuration, seed): the one with the most environment steps, then
    the newest summary.json. Returns (kept, [(dropped, the run kept instead)])."""
    best: dict[tuple[ConfigKey, int], RunData] = {}
    for run in runs:
        key = (config_key(run), run.seed)
        if key not in best or _preference(run) > _preference(best[key]):
            best[key] = run
    kept = sorted(best.values(), key=lambda r: (r.algorithm, r.task_id, r.seed, str(r.folder)))
    dropped = [(r, best[(config_key(r), r.seed)]) for r in runs if best[(config_key(r), r.seed)] is not r]
    return kept, dropped


def _preference(run: RunData) -> tuple[int, float, str]:
    return run.env_steps, run.summary_mtime, str(run.folder)  # the folder only makes ties deterministic


def short_names(keys: Iterable[str]) -> dict[str, str]:
    """Dotted key -> its last component when no other key ends the same way, else the key."""
    keys = set(keys)
    counts = Counter(k.rsplit(".", 1)[-1] for k in keys)
    return {k: k.rsplit(".", 1)[-1] if counts[k.rsplit(".", 1)[-1]] == 1 else k for k in keys}


def format_value(value: Any) -> str:
    if value is None:
        return "none"  # the key is not in this run's configuration
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value or '""'
    return str(value)


def group_name(label: str, values: Mapping[str, Any], short: Mapping[str, str]) -> str:
    """`label [key=value, ...]`, or `label` without values."""
    if not values:
        return label
    return f"{label} [{', '.join(f'{short.get(k, k)}={format_value(v)}' for k, v in values.items())}]"


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> set[str]:
    """Keys whose values differ between two of `configs`. The fields of a table (operator)
    only one of the two has are left out: the table list's own key already differs."""
    keys: set[str] = set()
    for a, b in itertools.combinations(configs, 2):
        keys |= {k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not _absent_table_field(k, a, b)}
    return keys


def _absent_table_field(key: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True for `P.<name>.field` when P is a list of tables and only one of a, b has <name>."""
    parts = key.split(".")
    for i in range(1, len(parts) - 1):
        table = ".".join(parts[:i])
        if isinstance(a.get(table, b.get(table)), tuple):
            entry = f"{table}.{parts[i]}."
            return any(k.startswith(entry) for k in a) != any(k.startswith(entry) for k in b)
    return False


def name_by_configuration(runs: Sequence[RunData]) -> dict[Path, GroupName]:
    """folder -> group: one per configuration, named by the algorithm plus the keys in which
    configurations of that algorithm on the same task differ (the union over tasks, so that
    one name means one setting on every task)."""
    configs = {config_key(r): dict(config_key(r)[2]) for r in runs}
    short = short_names(k for r in runs for k in r.config)
    names: dict[ConfigKey, GroupName] = {}
    for label, keys in _group(list(configs), lambda key: key[0]).items():
        per_task = _group(keys, lambda key: key[1]).values()
        shown = sorted(set().union(*(differing_keys([configs[k] for k in task_keys]) for task_keys in per_task)))
        for key in keys:
            values = {k: configs[key].get(k) for k in shown}
            names[key] = (group_name(label, values, short), values)
    return {r.folder: names[config_key(r)] for r in runs} if _distinct(names) else _numbered(runs, names)


def _distinct(names: Mapping[ConfigKey, GroupName]) -> bool:
    """Whether no two configurations of one task share a name (values that print alike)."""
    per_task = Counter((key[1], name) for key, (name, _) in names.items())
    return all(count == 1 for count in per_task.values())


def _numbered(runs: Sequence[RunData], names: Mapping[ConfigKey, GroupName]) -> dict[Path, GroupName]:
    """Names made distinct with a `#i` suffix per configuration (never merge by accident)."""
    numbered = {key: (f"{name} #{i}", values) for i, (key, (name, values)) in enumerate(names.items(), 1)}
    return {r.folder: numbered[config_key(r)] for r in runs}


def resolve_keys(runs: Sequence[RunData], keys: Sequence[str]) -> list[str]:
    """--group-by keys as dotted configuration keys; a key may be given by its last
    components (`criterion` for `operators.prune_select.criterion`) when unambiguous."""
    known = {k for r in runs for k in r.config}
    resolved = []
    for key in keys:
        matches = [key] if key in known else sorted(k for k in known if k.endswith(f".{key}"))
        if not matches:
            raise ReportError(f"--group-by {key}: no run's configuration (pipeline.toml) has this key")
        if len(matches) > 1:
            raise ReportError(f"--group-by {key} is ambiguous: {', '.join(matches)}")
        resolved.append(matches[0])
    return list(dict.fromkeys(resolved))


def name_by_keys(runs: Sequence[RunData], keys: Sequence[str]) -> dict[Path, GroupName]:
    """folder -> group formed by (algorithm, task, values of `keys`), named `label [key=value, ...]`."""
    short = short_names(k for r in runs for k in r.config)
    groups = {}
    for run in runs:
        values = {k: run.config.get(k) for k in keys}
        groups[run.folder] = (group_name(run.algorithm, values, short), values)
    return groups


def pooled_differences(runs: Sequence[RunData], names: Mapping[Path, GroupName]) -> list[str]:
    """Notes naming the configuration keys that vary inside a --group-by group."""
    notes = []
    for (task, name), rows in _group(runs, lambda r: (r.task_id, names[r.folder][0])).items():
        configs = [dict(c) for c in dict.fromkeys(learning_config(r) for r in rows)]
        varying = differing_keys(configs)
        if varying:
            notes.append(f"{name} on {task} pools runs whose configurations differ in {', '.join(sorted(varying))}")
    return notes


def cross_task_differences(runs: Sequence[RunData], names: Mapping[Path, GroupName]) -> list[str]:
    """Notes naming the keys outside [env] in which the tasks pooled under one name differ."""
    notes = []
    for name, rows in _group(runs, lambda r: names[r.folder][0]).items():
        per_task = _group(rows, lambda r: r.task_id).values()
        configs = [dict(c) for c in dict.fromkeys(learning_config(task_rows[0]) for task_rows in per_task)]
        varying = sorted(k for k in differing_keys(configs) if not k.startswith("env."))
        if len(per_task) > 1 and varying:
            notes.append(f"{name}: its tasks, pooled when normalised, differ in {', '.join(varying)}")
    return notes


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
    """Per task x group (raw scores) and per group (normalised, when every task of the
    group has reference scores) IQM with 95% intervals."""
    per_task = [
        _task_entry(task, rows, reps, seed)
        for (task, _), rows in _group(scored, lambda s: (s.run.task_id, s.group)).items()
    ]
    per_algorithm = [_pooled_entry(rows, reps, seed) for rows in _group(scored, lambda s: s.group).values()]
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
        by_task = _group(usable, lambda s: s.run.task_id)
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


def _group(rows: Sequence[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return dict(sorted(groups.items()))


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
