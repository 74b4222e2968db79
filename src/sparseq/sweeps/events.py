"""SWEEP_DIR/events.jsonl: one JSON object a line, appended by the driver (sweep
start, skipped and submitted runs) and by the workers (a run's start and end).

Appends of one short line with O_APPEND land whole on a local file system, so workers
in other processes write without a lock; readers skip a partial last line. The log is
how a re-run shows which runs it started, and how the driver sees a run start.
"""

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any


def append_event(path: Path, event: str, **fields: Any) -> None:
    record = {
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "event": event,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **fields,
    }
    line = (json.dumps(record) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines from byte `offset` on, and the offset after the last of them."""
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1  # a line being written has no newline yet
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events, offset + end


def invocations(path: Path) -> list[list[dict[str, Any]]]:
    """The events of each invocation of the sweep, oldest first (split at sweep_start)."""
    events, _ = read_events(path)
    groups: list[list[dict[str, Any]]] = []
    for event in events:
        if event.get("event") == "sweep_start" or not groups:
            groups.append([])
        groups[-1].append(event)
    return groups
