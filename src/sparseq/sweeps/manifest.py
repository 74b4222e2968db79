"""SWEEP_DIR/sweep.json: the expanded grid, written on the first invocation.

A re-run must describe the same runs, or the folder would mix results of two
different sweeps under one name: a changed or removed run is an error naming what
changed. Each run is recorded with its whole resolved configuration, so an edit of a
pipeline file the sweep uses is caught as well as an edit of the sweep file. Only
added runs are accepted (a new seed, a new axis value); they are appended.
"""

import json
from pathlib import Path
from typing import Any

from sparseq.pipeline.config.dump import to_dict
from sparseq.pipeline.config.schema import PipelineConfig
from sparseq.runs.checkpoint import write_json
from sparseq.runs.provenance import now
from sparseq.sweeps.errors import SweepError
from sparseq.sweeps.grid import GridPoint
from sparseq.sweeps.spec import MANAGED_KEYS, SweepSpec

SHOWN = 3  # changes listed in the error line
# Set by the sweep from its name and folder: a moved or renamed sweep folder is the same grid.
LAYOUT_KEYS = (*MANAGED_KEYS, "run.wandb.group")


def _normal(data: Any) -> Any:
    """As JSON reads it back (tuples -> lists), so old and new compare equal."""
    return json.loads(json.dumps(data))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolved(config: PipelineConfig) -> dict[str, Any]:
    """The run's configuration as dotted key -> value, without the layout's keys."""
    return {k: v for k, v in _normal(_flat(to_dict(config))).items() if k not in LAYOUT_KEYS}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    if old.get("pipeline_path") != new["pipeline_path"]:
        changes.append(f"pipeline {old.get('pipeline_path')} -> {new['pipeline_path']}")
    before, after = old.get("config", {}), new["config"]
    # Keys on one side only are the schema's, not the grid's: a sparseq update that adds
    # a key (at its default) leaves the grid as it was.
    for key in sorted(set(before) & set(after)):
        if before[key] != after[key]:
            changes.append(f"{key} {before[key]!r} -> {after[key]!r}")
    return changes


def read_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SweepError(f"{path}: unreadable sweep manifest ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise SweepError(f"{path}: not a sweep manifest (no runs list)")
    return data


def reconcile(
    path: Path, spec: SweepSpec, points: list[GridPoint], configs: dict[str, PipelineConfig], write: bool = True
) -> list[str]:
    """Writes the manifest (first invocation) or checks the grid against it; returns
    the ids this invocation adds. SweepError when a run changed or went missing.
    `configs`: each point's validated config; write=False (a dry run) checks only."""
    new = {p.id: {**_normal(p.record()), "config": resolved(configs[p.id])} for p in points}
    old = read_manifest(path)
    if old is None:
        if not write:
            return list(new)
        manifest = {"name": spec.name, "sweep_file": str(spec.path.resolve()), "created": now()}
        write_json(path, {**manifest, "runs": list(new.values())})
        return list(new)
    recorded = {r.get("id"): r for r in old["runs"]}
    problems = []
    for run_id, record in recorded.items():
        if run_id not in new:
            problems.append(f"run {run_id} is no longer in the grid")
            continue
        problems.extend(f"{run_id}: {change}" for change in _changes(record, new[run_id]))
    if problems:
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        raise SweepError(
            f"{spec.source}: the grid differs from {path}: {'; '.join(problems[:SHOWN])}{more}; "
            "a re-run may only add runs (give a new --out for a different sweep)"
        )
    added = [run_id for run_id in new if run_id not in recorded]
    if added and write:
        old["runs"].extend(new[run_id] for run_id in added)
        old.setdefault("extended", []).append({"time": now(), "runs": added})
        write_json(path, old)
    return added
