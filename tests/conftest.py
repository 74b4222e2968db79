"""Shared test setup: CPU only, no W&B network, and small pipeline configurations.

Every test is deterministic (fixed seeds) and runs on CPU in seconds, except the
DQN CartPole acceptance test (tests/test_dqn_cartpole.py, about a minute).
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("WANDB_SILENT", "true")
# The XLA flags `sparseq train` runs with, here too (before JAX's backend starts): a run
# resumed in the test process must sum its matrix products as the CLI's processes do.
from sparseq.runs.xla_threads import single_threaded_eigen

single_threaded_eigen()

REPO = Path(__file__).resolve().parents[1]


def small_config(out_dir: Path, **sections):
    """DQN on CartPole-v1 at sizes that compile and run in seconds.

    `sections` replaces fields per section, e.g. `learner={"warmup": 10}` (options of
    the learner's kind); `operators` is the operator list, as (kind, options dict)
    pairs or Stage entries.
    """
    from sparseq.pipeline.config.schema import PipelineConfig, Stage

    base = PipelineConfig()
    changes = {
        "run": {
            "total_steps": 400,
            "log_every": 100,
            "progress": False,
            "out_dir": str(out_dir),
            "checkpoint_dir": str(out_dir.parent / "checkpoints"),  # never the repository's checkpoints/
        },
        "learner": {"warmup": 50},
        "replay": {"capacity": 1_000, "batch_size": 8},
        "network": {"hidden": (16, 16)},
        "exploration": {"decay_steps": 100},
    }
    for name, values in sections.items():
        if name == "operators":
            changes[name] = values
        else:
            changes.setdefault(name, {}).update(values)
    fields = {}
    for name, values in changes.items():
        section = getattr(base, name)
        if name == "run":
            wandb = values.pop("wandb", {"mode": "disabled"})
            values["wandb"] = dataclasses.replace(section.wandb, **wandb)
        if name == "operators":
            fields[name] = tuple(op if isinstance(op, Stage) else Stage(op[0], op[1]) for op in values)
            continue
        if name == "learner":
            fields[name] = Stage(section.kind, dataclasses.replace(section.options, **values))
            continue
        fields[name] = dataclasses.replace(section, **values)
    return dataclasses.replace(base, **fields)


@pytest.fixture
def make_config(tmp_path):
    """small_config with run folders under this test's tmp_path."""
    return lambda **sections: small_config(tmp_path / "runs", **sections)


def cli_env() -> dict[str, str]:
    return {
        **os.environ,
        "SPARSEQ_HOME": str(REPO),
        "JAX_PLATFORMS": "cpu",
        "WANDB_MODE": "disabled",
        "WANDB_SILENT": "true",
    }


def sparseq_cli(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Runs `python -m sparseq.cli ARGS` in `cwd` with text stdout/stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "sparseq.cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_cli(tmp_path):
    """Runs the CLI in tmp_path (a clean folder) and returns the CompletedProcess."""
    return lambda *args, timeout=180: sparseq_cli(tmp_path, *args, timeout=timeout)
