"""Q-learner over a population of P online networks with H heads each.

One class covers the discrete-action methods:
- DQN: P = 1, H = 1, bootstrap from a separate target network (`target="network"`),
  kept in sync by the `TargetSync` operator.
- TF-DQN: P = 1, H = 1, bootstrap from the online network under stop-gradient
  (`target="online"`).
- iS-DQN: P = 1, H = K + 1, `target="online"`: head k regresses on head k - 1 of the
  same network; the `SharedTargetShift` operator moves the window.
- EauDeDQN: P = K masked networks against ONE shared target network, computed once per
  batch; the `PruneSelect` operator picks the winner.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.losses import huber, iterated_td_losses, l2, online_and_source_heads, td_targets
from sparseq.stages.learners.options import LearnerOptions
from sparseq.stages.learners.population import select_member, stack_members
from sparseq.stages.learners.value_state import ValueState
from sparseq.stages.networks.options import NetworkConfig, make_network_factory
from sparseq.stages.networks.q_network import QNetwork
from sparseq.stages.options import Rule
from sparseq.stages.sparsity import apply_masks, init_masks, mask_optimizer_state
from sparseq.types import Batch

TargetKind = Literal["network", "online"]


# The Q-learner's state is one value sub-state (the operators act on it directly).
LearnerState = ValueState


@dataclass(frozen=True)
class QLearnerOptions(LearnerOptions):
    target: TargetKind = "network"
    """network: a separate target network (DQN; an operator must update it, e.g.
    target_sync); online: current parameters under stop-gradient (TF-DQN, iS-QL)."""
    learning_rate: float = 3e-4
    adam_eps: float = 1e-8
    loss: Literal["l2", "huber"] = "l2"
    online_forward: Literal["concat", "separate"] = "concat"
    """With target = "online" (TF-DQN, iS-QL): "concat" passes concat(s, s') through
    the network once (the iS-QL reference code); "separate" passes s' on its own under
    stop-gradient: same values and gradients for per-example layers, and the backward
    pass skips the s' half (about 2x cheaper for convolutional torsos on CPU)."""
    population: int = 1
    """P online networks learning from the same batches (EauDeQN's K)."""
    masked: bool = False
    """Keep sparsity masks (dense at first) for a pruning operator to shrink."""

    def rules(self) -> list[Rule]:
        return [
            *super().rules(),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("adam_eps", self.adam_eps > 0, "must be > 0"),
            ("population", self.population >= 1, "must be >= 1"),
        ]


class QLearner(eqx.Module):
    """Attributes:
    make_network: key -> QNetwork; called P times (with distinct keys) at init.
    optimizer: optax transformation applied to each member independently.
    population: P, number of online networks.
    masked: keep sparsity masks (dense at init) for pruning operators to shrink;
        they are re-applied to the weights and optimizer moments after every update.
    target: "network" (separate target params) or "online" (stop-gradient online).
    loss: "l2" (squared TD error) or "huber" (delta 1).
    num_actions: A.
    online_forward: with target="online", how s' goes through the network.
        "concat": one forward pass on concat(s, s') (the iS-QL reference code; needed
        if a layer ever uses batch statistics). "separate": s' in its own forward
        under stop-gradient. Same values for per-example layers (LayerNorm included),
        but the backward pass skips the s' half: about 2x cheaper for a conv torso on
        CPU, while the MLP is ~10% faster with "concat".
    """

    make_network: Callable[[Array], QNetwork] = eqx.field(static=True)
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    num_actions: int = eqx.field(static=True)
    population: int = eqx.field(static=True, default=1)
    masked: bool = eqx.field(static=True, default=False)
    target: TargetKind = eqx.field(static=True, default="network")
    loss: Literal["l2", "huber"] = eqx.field(static=True, default="l2")
    online_forward: Literal["concat", "separate"] = eqx.field(static=True, default="concat")

    Options = QLearnerOptions

    @classmethod
    def from_options(cls, options: QLearnerOptions, context: BuildContext) -> "QLearner":
        """The Q-network of the [network] section, K + 1 heads when it iterates."""
        network: NetworkConfig = context.sections["network"]
        return cls(
            make_network=make_network_factory(network, context.obs_shape, network.num_heads, context.num_actions),
            optimizer=optax.adam(options.learning_rate, eps=options.adam_eps),
            num_actions=context.num_actions,
            population=options.population,
            masked=options.masked,
            target=options.target,
            loss=options.loss,
            online_forward=options.online_forward,
        )

    def init(self, key: Array) -> LearnerState:
        keys = jax.random.split(key, self.population)
        # Every member starts from the same weights, so the population is a set of
        # copies of one initial network (EauDeQN's members are pruned copies).
        online = stack_members(lambda _: self.make_network(keys[0]), keys)
        params = eqx.filter(online, eqx.is_array)
        opt_state = jax.vmap(self.optimizer.init)(params)
        target = select_member(online, 0) if self.target == "network" else None
        return LearnerState(
            online=online,
            target=target,
            opt_state=opt_state,
            masks=init_masks(online) if self.masked else None,
            loss_sums=jnp.zeros((self.population,), jnp.float32),
            acting_member=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )

    def greedy_values(self, state: LearnerState, obs: Array, key: Array) -> Array:
        """Values the acting policy is greedy on.

        obs: (N, *obs_shape) -> (N, A). With several heads, one online head (1..H-1)
        is drawn uniformly per environment at every call.
        """
        network = select_member(state.online, state.acting_member)
        values = network.batched(obs)  # (N, H, A)
        num_heads = values.shape[1]
        if num_heads == 1:
            return values[:, 0]
        heads = jax.random.randint(key, (obs.shape[0],), 1, num_heads)
        return jnp.take_along_axis(values, heads[:, None, None], axis=1)[:, 0]

    def with_random_acting_member(self, state: LearnerState, key: Array, probability: Array) -> LearnerState:
        """`state` whose acting member is, with `probability`, drawn uniformly from the
        P online networks (one draw for all environments of this step)."""
        use_random = jax.random.uniform(key) < probability
        random_member = jax.random.randint(jax.random.fold_in(key, 1), (), 0, self.population)
        member = jnp.where(use_random, random_member, state.acting_member).astype(jnp.int32)
        return eqx.tree_at(lambda s: s.acting_member, state, member)

    def act(self, state: LearnerState, obs: Array, key: Array, epsilon: Array) -> Array:
        """Epsilon-greedy actions. obs: (N, *obs_shape) -> (N,) int32."""
        head_key, explore_key, random_key = jax.random.split(key, 3)
        greedy = jnp.argmax(self.greedy_values(state, obs, head_key), axis=-1).astype(jnp.int32)
        n = obs.shape[0]
        explore = jax.random.uniform(explore_key, (n,)) < epsilon
        random_actions = jax.random.randint(random_key, (n,), 0, self.num_actions)
        return jnp.where(explore, random_actions, greedy)

    def _element_loss(self) -> Callable[[Array], Array]:
        return huber if self.loss == "huber" else l2

    def update(self, state: LearnerState, batch: Batch) -> tuple[LearnerState, dict[str, Array]]:
        """One gradient step of every member on the same batch.

        Returns the new state and metrics: "loss" (P,) and "head_losses" (P, H').
        """
        num_heads = state.online.num_heads
        trained, source = online_and_source_heads(num_heads)
        element_loss = self._element_loss()
        batch_size = batch.action.shape[0]
        shared_targets = None
        if self.target == "network":
            next_values = state.target.batched(batch.next_obs)[:, source]
            shared_targets = td_targets(batch.reward, batch.discount, next_values)

        def loss_fn(network: QNetwork) -> tuple[Array, Array]:
            if shared_targets is not None:
                q_values = network.batched(batch.obs)
                targets = shared_targets
            elif self.online_forward == "separate":
                q_values = network.batched(batch.obs)
                next_values = jax.lax.stop_gradient(network).batched(batch.next_obs)[:, source]
                targets = td_targets(batch.reward, batch.discount, next_values)
            else:
                # One forward pass on concat(s, s'), as in the iS-QL reference code.
                both = network.batched(jnp.concatenate([batch.obs, batch.next_obs], axis=0))
                q_values = both[:batch_size]
                targets = td_targets(batch.reward, batch.discount, both[batch_size:, source])
            head_losses = iterated_td_losses(q_values[:, trained], batch.action, targets, element_loss)
            return jnp.sum(head_losses), head_losses

        def member_update(network: QNetwork, opt_state: Any, masks: Any):
            (loss, head_losses), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(network)
            params = eqx.filter(network, eqx.is_array)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            network = eqx.apply_updates(network, updates)
            if masks is not None:
                network = apply_masks(network, masks)
                opt_state = mask_optimizer_state(opt_state, masks)
            return network, opt_state, loss, head_losses

        online, opt_state, loss, head_losses = eqx.filter_vmap(member_update)(
            state.online, state.opt_state, state.masks
        )
        new_state = eqx.tree_at(
            lambda s: (s.online, s.opt_state, s.loss_sums, s.updates),
            state,
            (online, opt_state, state.loss_sums + loss, state.updates + 1),
        )
        return new_state, {"loss": loss, "head_losses": head_losses}
