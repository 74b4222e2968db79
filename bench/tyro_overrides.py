"""tyro vs sparseq's own override parser on the bad-input cases of the test suite.

    python bench/tyro_overrides.py

For each bad command line, both parse the overrides of `dqn-cartpole` (tyro from the
dataclass view that renders `--help`); printed per case: whether the error is one line,
whether it names the key and the offending value, and the exit status. A measurement
behind the README's "why the overrides keep a hand-written parser", not a test.
"""

import contextlib
import io
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tyro

from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.help_view import help_view
from sparseq.pipeline.config.loader import load_pipeline

CASES = [
    ("unknown key", ["--learner.lerning-rate", "3"], "lerning", "3"),
    ("wrong type", ["--learner.gamma", "abc"], "gamma", "abc"),
    ("missing value", ["--replay.batch-size"], "batch", ""),
    ("out of range", ["--replay.batch-size", "0"], "batch_size", "0"),
    ("bad choice", ["--learner.loss", "l3"], "loss", "l3"),
    ("operator option", ["--operators.target-sync.period", "x"], "period", "x"),
]


def tyro_error(args: list[str]) -> tuple[str, int]:
    config = load_pipeline("dqn-cartpole")[0]
    view, values = help_view(config)
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            tyro.cli(view, default=values, args=args)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return err.getvalue().strip(), code


def sparseq_error(args: list[str]) -> tuple[str, int]:
    try:
        load_pipeline("dqn-cartpole", args)
    except ConfigError as error:
        return f"sparseq: error: {error}", 2
    return "", 0


def main() -> None:
    print(f"{'case':<18} {'parser':<8} {'lines':>5} {'names key':>9} {'names value':>11} {'exit':>4}")
    for name, args, key, value in CASES:
        for parser, run in (("tyro", tyro_error), ("sparseq", sparseq_error)):
            text, code = run(args)
            lines = len([line for line in text.splitlines() if line.strip()])
            print(
                f"{name:<18} {parser:<8} {lines:>5} {key in text.replace('-', '_')!s:>9} "
                f"{bool(value) and value in text!s:>11} {code:>4}"
            )


if __name__ == "__main__":
    main()
