"""The sweep's live status table: SWEEP_DIR/status.json and status.md, rewritten by
the driver every few seconds from the run folders' metrics.jsonl (and summary.json),
and printed at the end.

Per run: its id, state (queued, running, finished, failed, stopped, skipped runs show
as finished), environment steps (gradient steps offline) against the total, the last
recent-episodes return (the mean over the seeds of a pack), and a note.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

from sparseq.runs.checkpoint import write_json
from sparseq.runs.provenance import now
from sparseq.sweeps.layout import SweepDir
from sparseq.sweeps.plan import read_summary

QUEUED, RUNNING, FINISHED, FAILED, STOPPED = "queued", "running", "finished", "failed", "stopped"
TAIL_BYTES = 16_384  # enough for a log point's line; metrics.jsonl is read from its end


@dataclasses.dataclass
class RunStatus:
    run_id: str
    state: str
    total_steps: int
    steps: int | None = None
    last_return: float | None = None
    note: str = ""


def _last_record(path: Path) -> dict[str, Any] | None:
    """The last complete line of a metrics.jsonl, None when there is none yet."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written
        if isinstance(record, dict):
            return record
    return None


def _progress(record: dict[str, Any]) -> tuple[int | None, float | None]:
    steps = record.get("env_steps", record.get("gradient_steps"))
    value = record.get("train/return_recent", record.get("return_recent", record.get("eval/return_mean")))
    return steps, value


def measure(folder: Path) -> tuple[int | None, float | None]:
    """(steps, last return) of a run folder or a pack's seed folders."""
    seeds = sorted(folder.glob("seed-*/metrics.jsonl"))
    paths = seeds or [folder / "metrics.jsonl"]
    found = [_progress(r) for r in map(_last_record, paths) if r is not None]
    if not found:
        return None, None
    steps = [s for s, _ in found if s is not None]
    values = [v for _, v in found if isinstance(v, int | float)]
    return (min(steps) if steps else None), (sum(values) / len(values) if values else None)


def refresh(layout: SweepDir, row: RunStatus) -> None:
    """Steps and return from the run's files (the summary's when it has one)."""
    folder = layout.run_folder(row.run_id)
    summary = read_summary(folder) or {}
    steps, value = measure(folder)
    # A final summary has the final count (a diverged run's only its status and step);
    # a stopped run's summary is stale once it is resumed.
    final = summary if summary.get("status") in ("finished", "non-finite") else {}
    final_steps, final_return = _progress(final)
    row.steps = final_steps if final_steps is not None else steps
    row.last_return = final_return if final_return is not None else value


def _fmt_steps(row: RunStatus) -> str:
    done = f"{row.steps:,}" if row.steps is not None else "-"
    return f"{done} / {row.total_steps:,}"


def table(rows: list[RunStatus]) -> str:
    counts = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    head = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    lines = [
        f"{len(rows)} runs: {head}",
        "",
        "| run | state | steps | return | note |",
        "|---|---|---:|---:|---|",
    ]
    for row in rows:
        shown = f"{row.last_return:,.1f}" if row.last_return is not None else "-"
        note = row.note.replace("|", "/")
        lines.append(f"| {row.run_id} | {row.state} | {_fmt_steps(row)} | {shown} | {note} |")
    return "\n".join(lines) + "\n"


def write_status(layout: SweepDir, name: str, rows: list[RunStatus]) -> None:
    for row in rows:
        if row.state != QUEUED:
            refresh(layout, row)
    write_json(layout.status_json, {"sweep": name, "updated": now(), "runs": [dataclasses.asdict(r) for r in rows]})
    text = f"# sweep {name}\n\nupdated {now()}\n\n{table(rows)}"
    tmp = layout.status_md.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(layout.status_md)
