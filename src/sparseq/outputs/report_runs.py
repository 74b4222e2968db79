"""Reading run folders for `sparseq report`: pipeline.toml (flattened to dotted keys),
summary.json, episodes.csv and metrics.jsonl. No JAX is imported."""

import csv
import dataclasses
import json
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FINAL_FRACTION = 0.1
SPARSITY_KEY = "sparsity/overall"
MIN_SEEDS = 3  # intervals over fewer seeds are marked as not meaningful
FINISHED = "finished"
NO_SUMMARY = "unfinished (no summary.json)"


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


def group_rows(rows: Sequence[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    """rows by key(row), in sorted key order."""
    groups: dict[Any, list[Any]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return dict(sorted(groups.items()))
