"""filter_jit_once: programs run once compile without LLVM optimisations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.stages.compile_once import filter_jit_once


def test_a_run_once_program_computes_what_the_optimised_one_does():
    def draw(key, scale):
        return scale * jax.random.truncated_normal(key, -2.0, 2.0, (64, 48)) + jnp.arange(48.0)

    key = jax.random.key(3)
    once = filter_jit_once(draw)(key, 0.5)
    np.testing.assert_allclose(once, eqx.filter_jit(draw)(key, 0.5), rtol=1e-6, atol=1e-6)
    assert once.shape == (64, 48)


def test_the_decorator_takes_jit_options():
    @filter_jit_once(donate="all")
    def double(x):
        return 2 * x

    np.testing.assert_array_equal(double(jnp.arange(5.0)), 2 * np.arange(5.0))
