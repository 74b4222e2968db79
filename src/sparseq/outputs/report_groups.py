"""Grouping runs for `sparseq report`: by resolved configuration minus the seed and the
keys that do not change learning, named by the keys in which the groups differ."""

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sparseq.outputs.report_runs import FINISHED, ReportError, RunData, group_rows

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
    "run.seeds",  # a seed of a pack records its own seed alone (run.seeds is empty there)
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
    for label, keys in group_rows(list(configs), lambda key: key[0]).items():
        per_task = group_rows(keys, lambda key: key[1]).values()
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
    for (task, name), rows in group_rows(runs, lambda r: (r.task_id, names[r.folder][0])).items():
        configs = [dict(c) for c in dict.fromkeys(learning_config(r) for r in rows)]
        varying = differing_keys(configs)
        if varying:
            notes.append(f"{name} on {task} pools runs whose configurations differ in {', '.join(sorted(varying))}")
    return notes


def cross_task_differences(runs: Sequence[RunData], names: Mapping[Path, GroupName]) -> list[str]:
    """Notes naming the keys outside [env] in which the tasks pooled under one name differ."""
    notes = []
    for name, rows in group_rows(runs, lambda r: names[r.folder][0]).items():
        per_task = group_rows(rows, lambda r: r.task_id).values()
        configs = [dict(c) for c in dict.fromkeys(learning_config(task_rows[0]) for task_rows in per_task)]
        varying = sorted(k for k in differing_keys(configs) if not k.startswith("env."))
        if len(per_task) > 1 and varying:
            notes.append(f"{name}: its tasks, pooled when normalised, differ in {', '.join(varying)}")
    return notes
