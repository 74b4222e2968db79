"""The driver's view of the runs of this invocation: each run's row of the status
table, moved along by the workers' events (start, end) and by what the backends
report (a Ray task's result, a worker process that died without an end event)."""

import sys
from typing import Any

from sparseq.sweeps.events import read_events
from sparseq.sweeps.layout import SweepDir
from sparseq.sweeps.status import FAILED, QUEUED, RUNNING, STOPPED, RunStatus, write_status

POLL_SECONDS = 3.0  # how often the driver rewrites the status table


class Tracker:
    def __init__(self, layout: SweepDir, name: str, rows: list[RunStatus], events_offset: int):
        self.layout = layout
        self.name = name
        self.rows = {row.run_id: row for row in rows}
        self.offset = events_offset  # events before it belong to earlier invocations
        self.ended: set[str] = set()
        self.todo = sum(row.state == QUEUED for row in rows)  # what this invocation runs

    def poll(self) -> None:
        """Takes the new events into the rows and rewrites status.md/json."""
        events, self.offset = read_events(self.layout.events, self.offset)
        for event in events:
            row = self.rows.get(event.get("run"))
            if row is None or row.run_id in self.ended:
                continue
            if event.get("event") == "start":
                row.state, row.note = RUNNING, event.get("mode", "")
                self._say(f"{row.run_id}: running ({row.note})")
            elif event.get("event") == "end":
                self.finish(row.run_id, event)
        write_status(self.layout, self.name, list(self.rows.values()))

    def finish(self, run_id: str, outcome: dict[str, Any]) -> None:
        """A run's outcome ({"state", "error"}); the first one reported counts."""
        if run_id in self.ended:
            return
        row = self.rows[run_id]
        row.state = outcome.get("state", FAILED)
        if outcome.get("error"):
            row.note = str(outcome["error"])
        self.ended.add(run_id)
        self._say(f"{run_id}: {row.state}" + (f" ({row.note})" if outcome.get("error") else ""))

    def _say(self, line: str) -> None:
        """One line per change, for whoever watches the driver (status.md has them all)."""
        print(f"[{len(self.ended)}/{self.todo} done] {line}", file=sys.stderr, flush=True)

    def interrupted(self) -> None:
        """Ctrl-C: the runs still running are stopped (a re-run resumes them)."""
        for row in self.rows.values():
            if row.state == RUNNING and row.run_id not in self.ended:
                self.finish(row.run_id, {"state": STOPPED, "error": "interrupted"})

    def fail(self, run_id: str, message: str) -> None:
        self.finish(run_id, {"state": FAILED, "error": message})

    @property
    def all_rows(self) -> list[RunStatus]:
        return list(self.rows.values())
