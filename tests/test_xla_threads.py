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


@pytest.fixture
def before_the_backend(monkeypatch):
    """As if JAX's backend had not started (it has, in the test process)."""
    monkeypatch.delenv(xla_threads.ENV_VAR, raising=False)
    monkeypatch.delenv(xla_threads.POOL_SIZE_VAR, raising=False)
    monkeypatch.setattr(xla_threads, "_backend_started", lambda: False)


def test_an_overlapped_run_gets_one_intra_op_thread(before_the_backend):
    assert not xla_threads.one_intra_op_thread_for_overlap(False)
    assert xla_threads.POOL_SIZE_VAR not in os.environ
    assert xla_threads.one_intra_op_thread_for_overlap(True)
    assert os.environ[xla_threads.POOL_SIZE_VAR] == "1"


def test_a_set_pool_size_or_eigen_threads_on_is_kept(before_the_backend, monkeypatch):
    monkeypatch.setenv(xla_threads.POOL_SIZE_VAR, "4")
    assert not xla_threads.one_intra_op_thread_for_overlap(True)
    assert os.environ[xla_threads.POOL_SIZE_VAR] == "4"
    monkeypatch.delenv(xla_threads.POOL_SIZE_VAR)
    monkeypatch.setenv(xla_threads.ENV_VAR, "on")
    assert not xla_threads.one_intra_op_thread_for_overlap(True)
    assert xla_threads.POOL_SIZE_VAR not in os.environ


def test_too_late_once_the_backend_runs(monkeypatch):
    monkeypatch.delenv(xla_threads.ENV_VAR, raising=False)
    monkeypatch.delenv(xla_threads.POOL_SIZE_VAR, raising=False)
    import jax.numpy as jnp

    jnp.ones(2).block_until_ready()
    assert not xla_threads.one_intra_op_thread_for_overlap(True)
    assert xla_threads.POOL_SIZE_VAR not in os.environ


def test_the_train_command_sizes_the_pool_before_the_backend_starts():
    """What `train_command` imports before it sizes the pool starts no backend, and the
    pool XLA:CPU then makes has one thread: a program with eight independent branches
    runs on it."""
    probe = (
        "import os, sparseq.cli, sparseq.pipeline.config.loader, sparseq.pipeline.config.build\n"
        "import sparseq.pipeline.config.paths, sparseq.runs.runner\n"
        "from jax._src import xla_bridge\n"
        "assert not xla_bridge._backends, 'backend started at import'\n"
        "from sparseq.runs.xla_threads import one_intra_op_thread_for_overlap\n"
        "assert one_intra_op_thread_for_overlap(True)\n"
        "import jax, jax.numpy as jnp\n"
        "branches = jax.jit(lambda x: [jnp.tanh(x @ x + i) for i in range(8)])\n"
        "jax.block_until_ready(branches(jnp.ones((64, 64))))\n"
        "names = [open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task')]\n"
        "print(names.count('tf_XLAEigen'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (xla_threads.POOL_SIZE_VAR, xla_threads.ENV_VAR)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
