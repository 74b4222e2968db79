"""`--local`: the jobs one after another without Ray, each in a subprocess
(`python -m sparseq.sweeps.worker JOB_JSON`), so a crashing run does not end the sweep
and every run gets a fresh JAX, as under Ray."""

import json
import os
import subprocess
import sys

from sparseq.sweeps.jobs import Job
from sparseq.sweeps.tracker import POLL_SECONDS, Tracker

STOP_SECONDS = 60.0  # Ctrl-C: how long a worker may take to save its checkpoint and stop


def _wait(process: subprocess.Popen, tracker: Tracker) -> int:
    while True:
        try:
            return process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            tracker.poll()


def run_local(jobs: list[Job], tracker: Tracker) -> None:
    for job in jobs:
        tracker.poll()
        with open(job.log, "ab") as log:  # what the worker prints before it redirects itself
            process = subprocess.Popen(
                [sys.executable, "-m", "sparseq.sweeps.worker", json.dumps(job.to_dict())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=job.cwd,
                env={**os.environ, **job.env},
            )
        try:
            code = _wait(process, tracker)
        except KeyboardInterrupt:
            # The worker got the same SIGINT (one process group): it checkpoints and stops.
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            tracker.poll()
            raise
        tracker.poll()  # takes the worker's end event
        if job.run_id not in tracker.ended:
            tracker.fail(job.run_id, f"the worker process exited with code {code} before reporting; see {job.log}")
