"""filter_jit_once: programs run once compile without LLVM optimisations, and a
pipeline's initial learning state is one such program."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparseq.compile_once import filter_jit_once
from sparseq.pipeline.compose import Exploration, Pipeline
from sparseq.stages.collect import EnvpoolCollector
from sparseq.stages.learners import QLearner
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.stages.operators import TargetSync
from sparseq.stages.replay import UniformReplay


def backend_compiles(fn) -> int:
    """How many XLA programs `fn()` compiles."""
    count = 0

    def listen(event: str, duration: float, **_: object) -> None:
        nonlocal count
        count += event == "/jax/core/compile/backend_compile_duration"

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        jax.block_until_ready(fn())
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return count


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


def test_a_pipeline_initialises_its_learning_state_in_one_program():
    # Sizes no other test uses: eager random draws and zero fills of these shapes would
    # each compile a program of their own (59 for the learning part).
    def network(key):
        torso_key, head_key = jax.random.split(key)
        return QNetwork(MLPTorso(4, (29, 31), key=torso_key), 1, 2, "lecun_normal", key=head_key)

    pipeline = Pipeline(
        collector=EnvpoolCollector("CartPole-v1", num_envs=1, seed=0),
        replay=UniformReplay(capacity=1_234, batch_size=8, num_envs=1),
        learner=QLearner(network, optax.adam(1e-3), num_actions=2),
        operators=(TargetSync(period=10),),
        exploration=Exploration(start=1.0, end=0.1, decay_steps=40),
        warmup=20,
    )
    key = jax.random.key(0)
    # The pool's first state and the learning part, one program each.
    assert backend_compiles(lambda: pipeline.init(key)) == 2
    eager = pipeline.init_learning(key)
    once = pipeline.init(key)
    eager_leaves, once_leaves = (jax.tree.leaves(eqx.filter(s.learner, eqx.is_inexact_array)) for s in (eager, once))
    assert len(eager_leaves) == len(once_leaves) > 0
    for a, b in zip(eager_leaves, once_leaves):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(once.replay.count) == 0 and once.replay.obs.shape[0] == 1_234
