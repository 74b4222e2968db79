"""The command line turns XLA:CPU's Eigen pool off before JAX's backend starts, unless
told not to or already told otherwise through XLA_FLAGS."""

import os
import subprocess
import sys

import pytest

from sparseq.runs import xla_threads


def test_the_flag_is_added_to_the_existing_flags(monkeypatch):
    monkeypatch.delenv(xla_threads.ENV_VAR, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    assert xla_threads.single_threaded_eigen()
    assert xla_threads.single_threaded_eigen() is False  # once is enough
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false"


@pytest.mark.parametrize("flags", ["--xla_cpu_multi_thread_eigen=true", "--xla_cpu_multi_thread_eigen"])
def test_a_users_own_setting_is_kept(monkeypatch, flags):
    monkeypatch.delenv(xla_threads.ENV_VAR, raising=False)
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert not xla_threads.single_threaded_eigen()
    assert os.environ["XLA_FLAGS"] == flags


def test_on_keeps_the_pool(monkeypatch):
    monkeypatch.setenv(xla_threads.ENV_VAR, "on")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert not xla_threads.single_threaded_eigen()
    assert "XLA_FLAGS" not in os.environ


def test_the_train_command_sets_it_before_the_backend_starts():
    """XLA reads its flags once, when the CPU backend starts: by the time
    `train_command` sets the flag nothing may have started it (importing the CLI and
    the config loader included)."""
    probe = (
        "import sparseq.cli, sparseq.pipeline.config.loader\n"
        "from jax._src import xla_bridge\n"
        "assert not xla_bridge._backends, 'backend started at import'\n"
        "import os; from sparseq.runs.xla_threads import single_threaded_eigen\n"
        "single_threaded_eigen(); import jax.numpy as jnp; jnp.ones(2).sum().block_until_ready()\n"
        "print(os.environ['XLA_FLAGS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_threads.ENV_VAR)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "--xla_cpu_multi_thread_eigen=false"
