"""`sparseq sweep SWEEP.toml [--out DIR] [--workers N | --address ADDR | --local]
[--retry-failed] [--dry-run]`.

Everything is checked before anything runs (the file, every grid point through the
pipeline loader, the grid against the folder's manifest, Ray and its address); bad
input is one line and exit status 2. Then only the missing work runs; the exit status
is 0 when every run of the grid has finished, 1 otherwise, 130 when interrupted.
"""

import argparse
import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sparseq.sweeps.errors import SweepError
from sparseq.sweeps.layout import SweepDir
from sparseq.sweeps.plan import Action, Step

USAGE = "sparseq sweep SWEEP.toml [--out DIR] [--workers N | --address ADDR | --local] [--retry-failed] [--dry-run]"


def _parser() -> argparse.ArgumentParser:
    from sparseq.outputs.args import OneLineParser  # bad flags: one line, as every sparseq error

    parser = OneLineParser(prog="sparseq sweep", usage=USAGE, description="A grid of training runs (docs/sweeps.md).")
    parser.add_argument("sweep_file", help="the sweep file (TOML)")
    parser.add_argument("--out", help="the sweep folder (default: sweeps/NAME)")
    parser.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: this machine's cores)")
    parser.add_argument("--address", help="join this Ray cluster (HOST:PORT, ray://HOST:PORT or auto)")
    parser.add_argument("--local", action="store_true", help="run one run after another, without Ray")
    parser.add_argument("--retry-failed", action="store_true", help="train diverged runs again from scratch")
    parser.add_argument("--dry-run", action="store_true", help="show the grid and what would run; run nothing")
    return parser


def _check_flags(options: argparse.Namespace) -> None:
    if options.local and options.address:
        raise SweepError("sweep: --local runs without Ray; it cannot join --address")
    if options.workers is not None and (options.address or options.local):
        raise SweepError("sweep: --workers sizes the local Ray instance; the cluster (or --local) decides otherwise")
    if options.workers is not None and options.workers < 1:
        raise SweepError(f"sweep: --workers {options.workers}: must be at least 1")


@contextmanager
def _locked(layout: SweepDir) -> Iterator[None]:
    """One driver per sweep folder: two would start the same runs twice. The lock
    goes with the process, so a killed driver leaves none behind."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock.open("a+") as handle:  # not "w": the holder's pid stays readable
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise SweepError(
                f"{layout.root}: another `sparseq sweep` (pid {holder}) is running on this folder"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def _summary_line(name: str, layout: SweepDir, steps: list[Step]) -> str:
    counts: dict[str, int] = {}
    for step in steps:
        counts[step.action] = counts.get(step.action, 0) + 1
    shown = ", ".join(f"{n} {action}" for action, n in counts.items())
    return f"sweep {name}: {len(steps)} runs ({shown}) in {layout.root}"


def _initial_rows(steps: list[Step], configs: dict[str, Any]) -> list[Any]:
    from sparseq.sweeps.status import FAILED, FINISHED, QUEUED, RunStatus

    rows = []
    for step in steps:
        state = {Action.SKIP: FINISHED, Action.KEEP_FAILED: FAILED}.get(step.action, QUEUED)
        note = "finished before" if step.action == Action.SKIP else step.why if state == FAILED else str(step.action)
        rows.append(RunStatus(step.run_id, state, configs[step.run_id].run.total_steps, note=note))
    return rows


def run_sweep(options: argparse.Namespace) -> int:
    from sparseq.sweeps.check import check_points, resolve_pipelines
    from sparseq.sweeps.grid import expand
    from sparseq.sweeps.jobs import sweep_flags
    from sparseq.sweeps.manifest import reconcile
    from sparseq.sweeps.plan import plan
    from sparseq.sweeps.spec import read_sweep

    _check_flags(options)
    spec = read_sweep(Path(options.sweep_file))
    layout = SweepDir.at(options.out, spec.name)
    points = expand(spec, resolve_pipelines(spec))
    configs = check_points(spec, points, lambda point: sweep_flags(spec, layout, point))
    by_id = {p.id: p for p in points}
    if options.dry_run:
        reconcile(layout.manifest, spec, points, configs, write=False)
        steps = plan(layout, list(by_id), options.retry_failed)
        print(_summary_line(spec.name, layout, steps), file=sys.stderr)
        for step in steps:
            print(f"  {step.run_id:<60} {step.action:<12} {' '.join(by_id[step.run_id].flags())}")
        return 0
    ray = None
    if not options.local:
        from sparseq.sweeps.address import probe
        from sparseq.sweeps.ray_backend import check_feasible, import_ray, start_ray

        if options.address:
            probe(options.address)  # an unreachable cluster: one line within seconds
        ray = import_ray(options.address)  # before the folder is touched: a missing Ray changes nothing
        workers = options.workers or len(os.sched_getaffinity(0))
        if not options.address and spec.resources.num_cpus > workers:
            raise SweepError(
                f"{spec.source}: sweep.resources.num_cpus = {spec.resources.num_cpus:g}: "
                f"more than the local Ray instance's {workers} CPUs (--workers)"
            )
        if options.address:  # nor does a cluster that cannot be reached or run a single run
            start_ray(ray, options.address, workers)
            check_feasible(ray, spec.resources, options.address)
    try:
        return _run_locked(options, ray, spec, layout, points, configs)
    finally:
        if ray is not None and ray.is_initialized():
            ray.shutdown()


def _run_locked(options: argparse.Namespace, ray: Any, spec: Any, layout: SweepDir, points: list, configs: dict) -> int:
    """The sweep folder's part: manifest, plan, jobs, status, under the folder's lock."""
    from sparseq.sweeps.events import append_event
    from sparseq.sweeps.jobs import make_job
    from sparseq.sweeps.manifest import reconcile
    from sparseq.sweeps.orphans import wait_for_orphans
    from sparseq.sweeps.plan import clear, plan
    from sparseq.sweeps.status import table
    from sparseq.sweeps.tracker import Tracker

    by_id = {p.id: p for p in points}
    with _locked(layout):
        reconcile(layout.manifest, spec, points, configs)
        layout.create()
        wait_for_orphans(layout.events)  # before the plan reads folders an old worker may still write
        steps = plan(layout, list(by_id), options.retry_failed)
        print(_summary_line(spec.name, layout, steps), file=sys.stderr)
        append_event(
            layout.events,
            "sweep_start",
            sweep=spec.name,
            backend="local" if options.local else options.address or "ray-local",
            plan={s.run_id: str(s.action) for s in steps},
        )
        jobs = []
        for step in steps:
            if step.action in (Action.NEW, Action.RESTART):
                clear(layout, step.run_id)
            if step.action.runs:
                jobs.append(make_job(spec, layout, by_id[step.run_id], step.action))
        tracker = Tracker(layout, spec.name, _initial_rows(steps, configs), layout.events.stat().st_size)
        tracker.poll()
        code = _execute(options, ray, spec, jobs, tracker)
        tracker.poll()
        rows = tracker.all_rows
        append_event(layout.events, "sweep_end", states={r.run_id: r.state for r in rows})
    print(table(rows))
    print(f"status: {layout.status_md}; report: sparseq report {layout.root}", file=sys.stderr)
    if code:
        return code
    return 0 if all(r.state == "finished" for r in rows) else 1


def _execute(options: argparse.Namespace, ray: Any, spec: Any, jobs: list[Any], tracker: Any) -> int:
    """Runs the jobs; 130 when interrupted (what ran so far stays: a re-run resumes)."""
    if not jobs:
        return 0
    try:
        if options.local:
            from sparseq.sweeps.local_backend import run_local

            run_local(jobs, tracker)
            return 0
        from sparseq.sweeps.ray_backend import check_feasible, run_on_ray, start_ray

        if not ray.is_initialized():  # a local instance: started only when there is work
            start_ray(ray, None, options.workers or len(os.sched_getaffinity(0)))
            check_feasible(ray, spec.resources, None)
        run_on_ray(ray, jobs, spec.resources, tracker)
        return 0
    except KeyboardInterrupt:
        tracker.interrupted()
        print("\ninterrupted: re-run the same command to resume the unfinished runs", file=sys.stderr)
        return 130


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        _parser().print_help()
        return 0
    from sparseq.outputs.args import UsageError

    try:
        return run_sweep(_parser().parse_args(args))
    except (SweepError, UsageError) as error:
        print(f"sparseq: error: {error}", file=sys.stderr)  # the CLI's one-line form
        return 2
