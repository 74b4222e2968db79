"""The `sparseq` command line.

    sparseq train [PIPELINE] [--section.key VALUE ...]   train (default: quickstart)
    sparseq train PIPELINE --help                        every key with its value
    sparseq list                                         pipelines and env presets

Overrides use the pipeline dataclasses' key paths (`--replay.batch-size 64`,
`--network.hidden 64 64`, `--network.layer-norm` / `--no-network.layer-norm`).
Bad input prints one line naming the file or flag, the key and the value, and exits 2.
"""

import logging
import os
import sys
import tomllib
import warnings
from pathlib import Path

from sparseq.pipeline.config.errors import ConfigError

USAGE = """usage: sparseq COMMAND [ARGS]

commands:
  train [PIPELINE] [--section.key VALUE ...]   train a pipeline (default: quickstart)
  list                                         list pipelines and environment presets
  report RUN_OR_DIR ... [--out DIR] [--wandb]  IQM tables and plots over run folders (sweep folders too)
  export RUN [--out PATH]                      write the final policy in sparse form
  evaluate RUN_OR_EXPORT [--episodes N]        episodes of a final/exported policy [--video: an MP4]
  analyze RUN [--states N]                     srank, dormant neurons, churn, sparsity over its checkpoints
  sweep SWEEP.toml [--out DIR] [--local]       a grid of runs as Ray tasks; a re-run does only the missing work

`sparseq train PIPELINE --help` shows every key of the pipeline with its value."""

DEFAULT_PIPELINE = "quickstart"


def fail(message: str) -> int:
    print(f"sparseq: error: {message}", file=sys.stderr)
    return 2


def _split_train_args(args: list[str]) -> tuple[str, list[str], bool]:
    pipeline = DEFAULT_PIPELINE
    wants_help = any(a in ("-h", "--help") for a in args)
    args = [a for a in args if a not in ("-h", "--help")]
    if args and not args[0].startswith("--"):
        pipeline, args = args[0], args[1:]
    return pipeline, args, wants_help


def _print_help(config, pipeline: str) -> int:
    import tyro

    from sparseq.pipeline.config.help_view import help_view

    view, values = help_view(config)
    try:
        tyro.cli(view, default=values, args=["--help"], prog=f"sparseq train {pipeline}")
    except SystemExit:
        pass
    return 0


def _pop_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """Removes `name VALUE` or `name=VALUE` from args."""
    for i, arg in enumerate(args):
        if arg == name:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError("command line", "needs a run folder", name)
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


def train_command(args: list[str]) -> int:
    from sparseq.runs.xla_threads import single_threaded_eigen

    single_threaded_eigen()  # before JAX's backend starts
    from sparseq.pipeline.config.errors import CheckpointError
    from sparseq.pipeline.config.loader import load_pipeline
    from sparseq.runs.clock import compile_totals
    from sparseq.runs.compile_cache import enable_compilation_cache

    compile_totals()  # counts compile time from here on (timing.jsonl)
    enable_compilation_cache()

    try:
        resume_run, args = _pop_option(args, "--resume")
    except ConfigError as error:
        return fail(str(error))
    if resume_run is not None:
        return _resume(resume_run, args)
    pipeline, overrides, wants_help = _split_train_args(args)
    try:
        config, sources, path = load_pipeline(pipeline, overrides)
    except ConfigError as error:
        return fail(str(error))
    if wants_help:
        return _print_help(config, pipeline)
    from sparseq.pipeline.config.build import build_pipeline
    from sparseq.pipeline.config.paths import display
    from sparseq.runs.runner import train
    from sparseq.runs.xla_threads import one_intra_op_thread_for_overlap

    one_intra_op_thread_for_overlap(config.learner.options.overlap)  # before the backend starts
    where = display(path) if path is not None else "defaults"
    try:
        built = build_pipeline(config, source_of=lambda key: sources.get(key, where))
    except ConfigError as error:
        return fail(str(error))
    except (ValueError, RuntimeError) as error:
        return fail(f"{where}: {str(error).splitlines()[0]}")
    return _report(lambda: train(config, name=path.stem if path else "run", pipeline=built), CheckpointError)


def _resume(run: str, args: list[str]) -> int:
    from sparseq.pipeline.config.errors import CheckpointError
    from sparseq.runs.resume import AlreadyFinished, prepare_resume, record_resume
    from sparseq.runs.runner import resume

    if args and not args[0].startswith("--"):
        return fail(f"--resume continues {run!r} from its own pipeline.toml; drop the pipeline argument {args[0]!r}")
    try:
        plan = prepare_resume(run, args)
    except AlreadyFinished as finished:
        print(finished, file=sys.stderr)
        return 0
    except (ConfigError, CheckpointError) as error:
        return fail(str(error))
    print(f"resuming {plan.folder} from step {plan.step:,}", file=sys.stderr)
    record_resume(plan)
    return _report(lambda: resume(plan.config, plan.folder, plan.step, plan.meta, plan.checkpoints), CheckpointError)


def _report(run, checkpoint_error: type[Exception]) -> int:
    from sparseq.runs.record import RecordingError
    from sparseq.runs.runner import NonFiniteError
    from sparseq.stages.datasets.stream import DatasetError

    try:
        result = run()
    except NonFiniteError as error:
        return fail(str(error)) and 1
    except (checkpoint_error, ConfigError, DatasetError, RecordingError) as error:
        # A dataset is read when the run starts (and again on resume); a recording
        # checks the replay between chunks: what was written so far stays.
        return fail(str(error).splitlines()[0])
    except KeyboardInterrupt:
        print("\ninterrupted: results so far are in the run folder", file=sys.stderr)
        return 130
    print_summary(result.folder, result.summary)
    if result.summary.get("status") == "stopped":
        print(f"stopped by a signal; continue with: sparseq train --resume {result.folder}", file=sys.stderr)
        return 130
    return 0


def print_pack_summary(folder: Path, summary: dict) -> None:
    """A pack of seeds: one line per seed."""
    print(f"\nrun folder: {folder} ({len(summary['seeds'])} seeds in one process)")
    steps = summary.get("env_steps", 0)
    print(f"  {summary['algorithm']} on {summary['task_id']}, {steps:,} environment steps per seed")
    print(f"  aggregate steps / second: {summary['steps_per_second'] or 0:,.1f}")
    for seed, run in summary["runs"].items():
        recent = run.get("return_recent")
        shown = f"{recent:,.1f}" if recent is not None else "-"
        print(f"  seed {seed:<6} return (last 20 episodes) {shown:>10}   {folder / run['folder']}")


def print_summary(folder: Path, summary: dict) -> None:
    if "seeds" in summary:
        return print_pack_summary(folder, summary)

    def fmt(value):
        if isinstance(value, float):
            return f"{value:,.1f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    offline = "gradient_steps" in summary and "env_steps" not in summary
    progress = (
        [("gradient steps (offline)", summary.get("gradient_steps"))]
        if offline
        else [
            ("environment steps", summary["env_steps"]),
            ("episodes", summary["episodes"]),
            ("return (last 20 episodes)", summary["return_recent"]),
            ("best 20-episode return", summary["return_best_recent"]),
        ]
    )
    if summary.get("eval_return_last") is not None:
        progress.append(("last evaluation return", summary["eval_return_last"]))
    rows = [
        ("algorithm", summary["algorithm"]),
        ("task", summary["task_id"]),
        ("seed", summary["seed"]),
        *progress,
        ("steps / second", summary["steps_per_second"]),
        ("wall time (s)", summary["wall_seconds"]),
        ("online parameters", summary["online_parameters"]),
    ]
    if summary.get("sparsity") is not None:
        rows.append(("sparsity (pruned weights)", f"{summary['sparsity']:.1%}"))
    width = max(len(k) for k, _ in rows)
    print(f"\nrun folder: {folder}")
    for key, value in rows:
        print(f"  {key:<{width}}  {fmt(value)}")
    print(f"  {'plot':<{width}}  {folder / 'returns.png'}")


def list_command(args: list[str]) -> int:
    from sparseq.pipeline.config.loader import available_presets, preset_path
    from sparseq.pipeline.config.paths import pipelines_dir

    if args:
        return fail(f"list takes no arguments, got {args[0]!r}")
    print("pipelines (sparseq train NAME):")
    for path in sorted(pipelines_dir().glob("*.toml")):
        description = ""
        lines = path.read_text().splitlines()
        if lines and lines[0].startswith("#"):
            description = lines[0].lstrip("# ").strip()
        print(f"  {path.stem:<28} {description}")
    print("\nenvironment presets ([env] preset = NAME):")
    for name in available_presets():
        try:
            with preset_path(name).open("rb") as handle:
                description = tomllib.load(handle).get("description", "")
        except (tomllib.TOMLDecodeError, OSError):
            description = "(unreadable)"
        print(f"  {name:<28} {description}")
    return 0


def _lazy_command(module: str):
    """The `main(args) -> int` of `module`, imported only when the command runs."""

    def command(args: list[str]) -> int:
        import importlib

        return importlib.import_module(module).main(args)

    return command


COMMANDS = {
    "train": train_command,
    "list": list_command,
    "report": _lazy_command("sparseq.outputs.report"),
    "export": _lazy_command("sparseq.outputs.export"),
    "evaluate": _lazy_command("sparseq.outputs.evaluate"),
    "analyze": _lazy_command("sparseq.runs.analyze"),
    "sweep": _lazy_command("sparseq.sweeps.command"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("WANDB_SILENT", "true")
    # gymnasium warns about float64 Box bounds of envpool's spaces at every pool creation.
    warnings.filterwarnings("ignore", module="gymnasium")
    # orbax logs read failures through absl before sparseq reports them in one line.
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        import difflib

        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return fail(f"unknown command {argv[0]!r}{hint}")
    return command(argv[1:])


def entry() -> None:
    """The `sparseq` command. After a successful command every file is closed and the
    W&B run finished, so the process skips the interpreter's teardown (~1 s of JAX,
    tensorstore and thread-pool finalizers); any other outcome exits normally."""
    code = main()
    if code == 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)


if __name__ == "__main__":
    entry()
