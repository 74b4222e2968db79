"""Workers of an earlier driver that may still be writing.

A killed driver takes its local Ray instance along, and Ray's workers die with their
raylet, but not at the same instant: a run in its last second can still write its
summary after the driver is gone. A re-run that resumed or restarted that run at the
same time would write into the same folder, so before planning, the driver waits for
the processes that started a run (events.jsonl) and never ended it, when they are on
this machine and still alive.
"""

import socket
import time
from pathlib import Path

from sparseq.sweeps.errors import SweepError
from sparseq.sweeps.events import read_events

WAIT_SECONDS = 30.0
# What a worker's command line holds: a Ray worker (its title names the task, or the
# generic worker script) or a --local worker, so a recycled pid is not waited on.
WORKER_MARKS = ("run_job", "default_worker", "sparseq.sweeps.worker")


def _alive_worker(pid: int) -> bool:
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    # A zombie has exited (its parent has not reaped it); its cmdline is empty too.
    return state != "Z" and any(mark in command for mark in WORKER_MARKS)


def unfinished_workers(events_file: Path) -> dict[str, int]:
    """run id -> pid of this machine's workers that started a run and did not end it."""
    events, _ = read_events(events_file)
    host = socket.gethostname()
    started: dict[str, int] = {}
    for event in events:
        run, kind = event.get("run"), event.get("event")
        if kind == "start" and event.get("host") == host and isinstance(event.get("pid"), int):
            started[run] = event["pid"]
        elif kind == "end":
            started.pop(run, None)
    return {run: pid for run, pid in started.items() if _alive_worker(pid)}


def wait_for_orphans(events_file: Path, seconds: float = WAIT_SECONDS) -> None:
    """Returns once no earlier worker is alive; SweepError after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        alive = unfinished_workers(events_file)
        if not alive:
            return
        if time.monotonic() > deadline:
            run, pid = next(iter(alive.items()))
            raise SweepError(
                f"run {run} is still being written by pid {pid}, a worker of an earlier driver of this sweep; "
                "wait for it to end (or kill it) and run again"
            )
        time.sleep(0.5)
