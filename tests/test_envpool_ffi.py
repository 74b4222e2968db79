"""envpool's calls under stable names (stages/collect/envpool_ffi.py): the same steps
as envpool's own calls, one program text for every pool of a task (so JAX's persistent
cache can serve it), and envpool's own calls where the shim cannot be built."""

import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.stages.collect import EnvpoolCollector
from sparseq.stages.collect.envpool_ffi import stable_calls


def _rollout(collector: EnvpoolCollector, steps: int) -> np.ndarray:
    def body(state, t):
        state, transition, _ = collector.step(state, (t % 2) * jnp.ones((collector.num_envs,), jnp.int32))
        return state, transition.obs

    run = eqx.filter_jit(lambda s: jax.lax.scan(body, s, jnp.arange(steps))[1])
    return np.asarray(run(collector.init()))


def test_the_stable_calls_step_as_envpools_own():
    import envpool

    env = envpool.make("CartPole-v1", env_type="gymnasium", num_envs=2, seed=3)
    assert stable_calls(env) is not None, "the shim did not build on this machine"
    collector = EnvpoolCollector("CartPole-v1", num_envs=2, seed=3)  # reset once, as `own`
    own = EnvpoolCollector("CartPole-v1", num_envs=2, seed=3)
    object.__setattr__(own, "xla_functions", own.env.xla()[1:3])  # envpool's recv and send
    np.testing.assert_array_equal(_rollout(collector, 300), _rollout(own, 300))
    assert "sparseq_envpool_" in _program(collector) and "sparseq_envpool_" not in _program(own)


def _program(collector: EnvpoolCollector) -> str:
    actions = jnp.zeros(collector.num_envs, jnp.int32)
    return eqx.filter_jit(lambda s: collector.step(s, actions)).lower(collector.init()).as_text()


def test_two_pools_of_a_task_make_one_program():
    """What makes the loop cacheable across boundaries and processes; envpool's own
    calls embed the pool, so their programs differ."""
    a, b = EnvpoolCollector("CartPole-v1", seed=0), EnvpoolCollector("CartPole-v1", seed=1)
    assert _program(a) == _program(b)
    for c in (a, b):
        object.__setattr__(c, "xla_functions", c.env.xla()[1:3])
    assert _program(a) != _program(b)


def _child(tmp_path, **env) -> subprocess.CompletedProcess:
    probe = (
        "from sparseq.stages.collect import EnvpoolCollector\n"
        "from sparseq.stages.collect.envpool_ffi import library\n"
        "c = EnvpoolCollector('CartPole-v1', seed=0)\n"
        "import equinox as eqx, jax.numpy as jnp\n"
        "s, t, _ = eqx.filter_jit(c.step)(c.init(), jnp.zeros(1, jnp.int32))\n"
        "print(library() is not None, t.obs.shape)\n"
    )
    environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environ, timeout=120)


def test_without_a_compiler_or_when_off_envpools_own_calls_are_used(tmp_path):
    for env in ({"CC": "/bin/false"}, {"SPARSEQ_ENVPOOL_FFI": "off"}):
        out = _child(tmp_path / next(iter(env)), **env)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == ["False", "(1,", "4)"], env
    built = _child(tmp_path / "built")
    assert built.stdout.split()[0] == "True", built.stderr[-2000:]
    assert list((tmp_path / "built" / "sparseq" / "ffi").glob("envpool_ffi-*.so"))
