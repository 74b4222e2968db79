"""Running one grid point, in a process of its own (a Ray task with max_calls=1, or
`python -m sparseq.sweeps.worker JOB_JSON` under --local): JAX's state and envpool's
pools are per process, and a run that crashes its process takes no other run along.

The run starts through the Python API the CLI uses: `train(config, name, folder)` for
a new run, `prepare_resume` + `record_resume` + `resume` for one with a checkpoint.
The worker never raises: its outcome ({"run", "state", "error"}) is returned and
written to the sweep's events.jsonl.
"""

import json
import logging
import os
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from sparseq.sweeps.events import append_event
from sparseq.sweeps.jobs import Job

FINISHED, STOPPED, FAILED = "finished", "stopped", "failed"


def _redirect_output(log: Path) -> None:
    """The run's stdout and stderr (its own and its libraries', at the descriptor level)
    to its log file, appended: every segment of a resumed run in one place."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)


def _clear(job: Job) -> None:
    shutil.rmtree(job.folder, ignore_errors=True)
    shutil.rmtree(job.checkpoints, ignore_errors=True)


def _resume(job: Job) -> Any | None:
    """The resumed run's result, or None when the checkpoint cannot be resumed (the
    caller then trains from scratch)."""
    from sparseq.pipeline.config.errors import CheckpointError, ConfigError
    from sparseq.runs.resume import AlreadyFinished, prepare_resume, record_resume
    from sparseq.runs.runner import resume

    try:
        plan = prepare_resume(job.folder, [])
    except (AlreadyFinished, CheckpointError, ConfigError) as error:
        # AlreadyFinished here: the last checkpoint is at total_steps but the wrap-up
        # (summary, policy) never ran; a deterministic run from scratch redoes it.
        print(f"sweep: cannot resume ({error}); training from scratch", file=sys.stderr)
        append_event(Path(job.events), "fallback", run=job.run_id, reason=str(error).splitlines()[0])
        return None
    print(f"sweep: resuming {plan.folder} from step {plan.step:,}", file=sys.stderr)
    record_resume(plan)
    return resume(plan.config, plan.folder, plan.step, plan.meta, plan.checkpoints)


def _train(job: Job) -> Any:
    from sparseq.pipeline.config.loader import load_pipeline
    from sparseq.runs.runner import train
    from sparseq.runs.xla_threads import one_intra_op_thread_for_overlap

    _clear(job)  # a half-written folder of a run that died before its first checkpoint
    config, _, _ = load_pipeline(Path(job.pipeline_path), job.flags)
    one_intra_op_thread_for_overlap(config.learner.options.overlap)
    return train(config, name=job.run_id, folder=Path(job.folder))


def _record_failure(job: Job, message: str) -> None:
    """summary.json says the run failed, unless the runner already wrote one (a
    diverged run's names its step); a run that failed before its first log point has
    no folder left, and its failure is in the status table only."""
    folder = Path(job.folder)
    summary = folder / "summary.json"
    if folder.is_dir() and not summary.exists():
        from sparseq.runs.checkpoint import write_json

        write_json(summary, {"status": FAILED, "error": message})


def run_job(data: dict[str, Any]) -> dict[str, Any]:
    """Runs the job described by `data` (Job.to_dict()); returns its outcome."""
    job = Job.from_dict(data)
    _redirect_output(Path(job.log))
    # Before anything imports JAX (this module imports none): JAX_PLATFORMS and the
    # GPU variables are read when JAX is imported or first starts a backend.
    os.environ.update(job.env)
    if Path(job.cwd).is_dir():
        os.chdir(job.cwd)  # relative paths in pipeline files mean what they mean for `sparseq train`
    # What the CLI's main() quiets for `sparseq train`: gymnasium's warning at every pool
    # creation, orbax's absl logging of read failures that are reported in one line.
    warnings.filterwarnings("ignore", module="gymnasium")
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    started = time.time()
    append_event(Path(job.events), "start", run=job.run_id, mode=job.mode)
    print(f"sweep: {job.mode} {job.run_id} (pid {os.getpid()})", file=sys.stderr, flush=True)
    outcome: dict[str, Any] = {"run": job.run_id, "state": FAILED, "error": None}
    try:
        from sparseq.runs.clock import compile_totals
        from sparseq.runs.compile_cache import enable_compilation_cache
        from sparseq.runs.xla_threads import single_threaded_eigen

        single_threaded_eigen()  # before JAX's backend starts in this worker
        from sparseq.runs.runner import NonFiniteError

        compile_totals()  # timing.jsonl counts compile time from here, as under `sparseq train`
        enable_compilation_cache()
        try:
            result = _resume(job) if job.mode == "resume" else None
            if result is None:
                result = _train(job)
            status = result.summary.get("status")
            outcome["state"] = FINISHED if status == FINISHED else STOPPED if status == STOPPED else FAILED
            if outcome["state"] == FAILED:
                outcome["error"] = f"ended with status {status!r}"
        except NonFiniteError as error:
            outcome["error"] = str(error).splitlines()[0]
    except KeyboardInterrupt:
        outcome.update(state=STOPPED, error="interrupted")
    except Exception as error:  # any failure is this run's, never the sweep's
        traceback.print_exc()
        outcome["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
        _record_failure(job, outcome["error"])
    outcome["seconds"] = round(time.time() - started, 1)
    append_event(Path(job.events), "end", **outcome)
    sys.stdout.flush()
    sys.stderr.flush()
    return outcome


def main(argv: list[str] | None = None) -> int:
    """`python -m sparseq.sweeps.worker JOB_JSON`: exit 0 finished, 130 stopped, 1 failed."""
    argv = sys.argv[1:] if argv is None else argv
    outcome = run_job(json.loads(argv[0]))
    return {FINISHED: 0, STOPPED: 130}.get(outcome["state"], 1)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # As `sparseq train` does after a run: skip the interpreter's slow teardown.
    os._exit(code)
