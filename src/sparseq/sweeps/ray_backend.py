"""Running the jobs as Ray tasks: a local Ray instance (`ray.init(num_cpus=WORKERS)`)
or an existing cluster (`--address`).

Every run is one task with max_calls=1, so it gets a fresh worker process (JAX and
envpool keep per-process state, and a crash ends only that process), and
max_retries=0, so a crashed run is reported as failed instead of silently started
again over its half-written folder (a re-run of the sweep resumes it).
"""

import logging
import os
import sys
import threading
from typing import Any

from sparseq.sweeps.errors import SweepError
from sparseq.sweeps.jobs import Job
from sparseq.sweeps.spec import Resources
from sparseq.sweeps.tracker import POLL_SECONDS, Tracker
from sparseq.sweeps.worker import run_job

INSTALL = 'Ray is not installed: pip install -e ".[cluster]" (or run the grid one run after another with --local)'
INIT_SECONDS = 25.0  # after the probe's 5 s at most: an unreachable cluster fails within 30 s


def import_ray(address: str | None = None) -> Any:
    """Ray, imported (token authentication set up first when joining `address`: Ray
    reads RAY_AUTH_MODE into its configuration when it is imported)."""
    if address:
        _token_auth()
    try:
        import ray
    except ImportError:
        raise SweepError(INSTALL) from None
    return ray


def _give_up(address: str) -> None:
    """ray.init did not return: it can retry a half-open address for minutes, and it
    cannot be interrupted from another thread, so the process ends here."""
    print(
        f"sparseq: error: --address {address}: no Ray cluster answered within {INIT_SECONDS:.0f} s "
        "(something listens there, but ray.init does not connect)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(2)


def _token_auth() -> None:
    """Ray 2.60 clusters use token authentication by default (`ray start` writes the
    token to ~/.ray/auth_token), yet ray.init with an explicit address sends the token
    only when RAY_AUTH_MODE=token: without it the GCS refuses the driver and ray.init
    gives up after ~20 s of retries. When a token is at hand and the mode unset, the
    driver turns token mode on, as ray.init does itself for address="auto"; a cluster
    without authentication accepts such a driver too."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"


def start_ray(ray: Any, address: str | None, workers: int) -> None:
    """Joins `address` (probed first: address.probe), or starts a local instance with
    `workers` CPUs."""
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if not address:
        # No dashboard: a web server and a port that a sweep does not need.
        options.update(num_cpus=workers, include_dashboard=False)
    watchdog = threading.Timer(INIT_SECONDS, _give_up, args=(address or "(local)",))
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(address=address or None, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"--address {address}" if address else "local Ray"
        raise SweepError(f"{where}: {str(error).strip().splitlines()[0]}") from None
    finally:
        watchdog.cancel()


def check_feasible(ray: Any, resources: Resources, address: str | None) -> None:
    """A run asking for more than any Ray node has would wait forever: say so now.
    (An autoscaling cluster may grow; this checks what it has at the start.)"""
    total = ray.cluster_resources()
    have_cpus, have_gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if resources.num_cpus > have_cpus or resources.num_gpus > have_gpus:
        where = f"the cluster at {address}" if address else "the local Ray instance (--workers)"
        raise SweepError(
            f"sweep.resources: a run asks for {resources.num_cpus:g} CPUs and {resources.num_gpus:g} GPUs; "
            f"{where} has {have_cpus:g} CPUs and {have_gpus:g} GPUs"
        )


def device_env(resources: Resources) -> dict[str, str]:
    """What a run's JAX may use of the GPUs. Ray 2.60 sets CUDA_VISIBLE_DEVICES only
    for tasks that ask for GPUs: a task asking for none would see them all, and every
    such JAX process would claim 75% of a GPU's memory. A fraction of a GPU gets that
    fraction of its memory (JAX's preallocation), so the runs Ray packs onto one fit."""
    if resources.num_gpus == 0:
        return {"CUDA_VISIBLE_DEVICES": ""}
    if resources.num_gpus < 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
        return {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 * resources.num_gpus:.2f}"}
    return {}


def run_on_ray(ray: Any, jobs: list[Job], resources: Resources, tracker: Tracker) -> None:
    """Submits every job and follows them to the end; the tracker gets each outcome."""
    task = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_calls=1, max_retries=0)(run_job)
    devices = device_env(resources)
    pending = {task.remote({**job.to_dict(), "env": {**devices, **job.env}}): job for job in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
        for ref in ready:
            job = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker process died (crash, OOM kill)
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                outcome = {"state": "failed", "error": f"{type(error).__name__}: {first}; see {job.log}"}
            tracker.finish(job.run_id, outcome)
        tracker.poll()
