"""Value-network operators act on a ValueState wherever a learner keeps it: the
Q-learner's own state, or a named field of a composite learner state (`on`)."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparseq.stages.learners import QLearner, ValueState, value_state_of
from sparseq.stages.learners.value_state import HasValueStates
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.stages.operators import TargetSync


def make_network(key):
    torso_key, head_key = jax.random.split(key)
    return QNetwork(MLPTorso(3, (8,), key=torso_key), 1, 2, "lecun_normal", key=head_key)


class ActorCriticState(HasValueStates):
    """A learner state with two parts, as an actor-critic would hold them."""

    default_value: ClassVar[str] = "critic"
    critic: ValueState
    actor: ValueState
    temperature: jax.Array


def moved(values: ValueState) -> ValueState:
    """`values` with online != target and non-zero loss sums, so a sync shows."""
    online = jax.tree.map(lambda x: x + 1.0, values.online)
    return ValueState(
        online, values.target, values.opt_state, None, values.loss_sums + 3.0, values.acting_member, values.updates
    )


def composite_state() -> ActorCriticState:
    learner = QLearner(make_network=make_network, optimizer=optax.adam(1e-3), num_actions=2)
    critic = moved(learner.init(jax.random.key(0)))
    actor = moved(learner.init(jax.random.key(1)))
    return ActorCriticState(critic=critic, actor=actor, temperature=jnp.ones(()))


@pytest.mark.parametrize("on", ["", "critic", "actor"])
def test_target_sync_acts_on_the_named_value_state_only(on):
    state = composite_state()
    sync = TargetSync(period=10, on=on)
    _, synced, metrics = sync(sync.init(state), state, jnp.asarray(9), jnp.asarray(10))
    # An operator on a value state other than the learner's default one logs under its name.
    assert bool(metrics["target_updated" if on in ("", "critic") else f"{on}/target_updated"])
    assert len(metrics) == 1
    touched = on or "critic"
    untouched = "actor" if touched == "critic" else "critic"
    values = value_state_of(synced, touched)
    for online, target in zip(jax.tree.leaves(values.online), jax.tree.leaves(values.target)):
        np.testing.assert_array_equal(online[0], target)
    assert float(values.loss_sums[0]) == 0.0
    before, after = getattr(state, untouched), getattr(synced, untouched)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    assert float(synced.temperature) == 1.0


def test_a_state_without_that_value_state_is_a_one_line_error():
    with pytest.raises(ValueError, match="has no field 'policy'"):
        TargetSync(period=10, on="policy").init(composite_state())
