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
- Sparse iS-DQN: P = K masked networks with H = K' + 1 heads each, `target="selected_head"`:
  every member's head 1 regresses on member 0's head 0 at s' (member 0 is the network the
  last selection picked; its torso is current, so no separate network is stored), deeper
  heads iterate within each member, and the selection compares the head-1 losses, all
  measured against the same bootstrap values. `PruneSelect` then `SharedTargetShift`.

Knobs on top of any of them: Double DQN (`double_q`, with a target network), the
optimizer, its learning-rate schedule and gradient clipping (sparseq.stages.learners.
optimizers), and per-member training diagnostics (`diagnostics`).
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
from sparseq.stages.learners.losses import (
    cql_gaps,
    double_td_targets,
    huber,
    iterated_td_losses,
    l2,
    online_and_source_heads,
    td_targets,
)
from sparseq.stages.learners.optimizers import make_optimizer, total_updates
from sparseq.stages.learners.options import OptimizerOptions
from sparseq.stages.learners.population import select_member, stack_members
from sparseq.stages.learners.value_state import ValueState, new_value_state
from sparseq.stages.networks.options import NetworkConfig, make_network_factory
from sparseq.stages.networks.q_network import QNetwork
from sparseq.stages.options import Rule
from sparseq.stages.sparsity import apply_masks, mask_optimizer_state
from sparseq.types import Batch

TargetKind = Literal["network", "online", "selected_head"]


# The Q-learner's state is one value sub-state (the operators act on it directly).
LearnerState = ValueState


@dataclass(frozen=True)
class QLearnerOptions(OptimizerOptions):
    target: TargetKind = "network"
    """network: a separate target network (DQN; an operator must update it, e.g.
    target_sync); online: current parameters under stop-gradient (TF-DQN, iS-QL);
    selected_head: sparse iS-QL, every member's head 1 regresses on member 0's head 0 at
    s' (the selected network, current torso; needs network.iterations >= 1), deeper heads
    on their own member's previous head, and the members' head-1 losses are what a
    prune_select operator compares."""
    double_q: bool = False
    """Double DQN: the bootstrap action at s' is the argmax of the online network (each
    member's own; the source head's index with iterated heads), valued by the target
    network. Needs target = "network"."""
    loss: Literal["l2", "huber"] = "l2"
    online_forward: Literal["concat", "separate"] = "separate"
    """With target = "online" (TF-DQN, iS-QL): "separate" passes s' on its own under
    stop-gradient: same values and gradients for per-example layers (they differ in the
    last bit only), and the backward pass skips the s' half (about 2x cheaper for
    convolutional torsos, and the iS-DQN MLP loop ~15% faster, on CPU); "concat" passes
    concat(s, s') through the network once, as the iS-QL reference code does."""
    population: int = 1
    """P online networks learning from the same batches (EauDeQN's K)."""
    masked: bool = False
    """Keep sparsity masks (dense at first) for a pruning operator to shrink."""
    diagnostics: bool = False
    """Also report per member q_mean, q_max, td_error_std and grad_norm at every update."""
    cql_alpha: float = 0.0
    """CQL(H) weight (offline RL): each trained head's loss adds alpha * the batch mean
    of logsumexp_a Q(s, a) - Q(s, a_data); 0 = off. The EauDeQN authors' offline Atari
    setting is 0.1."""

    def rules(self) -> list[Rule]:
        return [
            *super().rules(),
            ("double_q", not self.double_q or self.target == "network", "needs target='network'"),
            ("population", self.population >= 1, "must be >= 1"),
            ("cql_alpha", self.cql_alpha >= 0, "must be >= 0 (0 = no CQL regulariser)"),
        ]


class QLearner(eqx.Module):
    """Attributes:
    make_network: key -> QNetwork; called P times (with distinct keys) at init.
    optimizer: optax transformation applied to each member independently.
    population: P, number of online networks.
    masked: keep sparsity masks (dense at init) for pruning operators to shrink;
        they are re-applied to the weights and optimizer moments after every update.
    target: "network" (separate target params), "online" (stop-gradient online) or
        "selected_head" (sparse iS-QL: member 0's head 0 at s' is every member's head-1
        bootstrap; `loss_sums` then accumulate the head-1 losses only, the losses
        measured against those shared values, which a selection can compare).
    loss: "l2" (squared TD error) or "huber" (delta 1).
    num_actions: A.
    online_forward: with target="online", how s' goes through the network.
        "separate" (default): s' in its own forward under stop-gradient. "concat": one
        forward pass on concat(s, s') (the iS-QL reference code; needed if a layer
        ever uses batch statistics). Same values for per-example layers (LayerNorm
        included), but "separate"'s backward pass skips the s' half: about 2x cheaper
        for a conv torso on CPU, and with Eigen's pool off the MLP loop is faster too
        (iS-DQN K=3 LunarLander 160 vs 186 us/step). With double_q it also says how s'
        goes through the online network for the argmax.
    double_q: Double DQN bootstrap (target="network" only): argmax of the online
        network at s', valued by the target network.
    diagnostics: `update` also returns per member "q_mean", "q_max", "td_error_std"
        and "grad_norm" (before clipping; of the kept weights when masked), each (P,).
    mask_gradients: with masks, zero the pruned weights' gradients before the
        optimizer, so a clip's global norm counts the kept weights only. Off, the
        pruned weights' steps are masked after the update (the same weights; set by
        `from_options` when max_grad_norm > 0, leaving unclipped runs bit-identical).
    cql_alpha: CQL(H) weight: every trained head's loss adds alpha * mean over the
        batch of logsumexp_a Q(s, a) - Q(s, a_data) ("cql_gap" (P,) reports that
        mean, averaged over the heads). The selection operators compare these full
        losses, the objective each member minimises.
    """

    make_network: Callable[[Array], QNetwork] = eqx.field(static=True)
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    num_actions: int = eqx.field(static=True)
    population: int = eqx.field(static=True, default=1)
    masked: bool = eqx.field(static=True, default=False)
    target: TargetKind = eqx.field(static=True, default="network")
    loss: Literal["l2", "huber"] = eqx.field(static=True, default="l2")
    online_forward: Literal["concat", "separate"] = eqx.field(static=True, default="separate")
    double_q: bool = eqx.field(static=True, default=False)
    diagnostics: bool = eqx.field(static=True, default=False)
    mask_gradients: bool = eqx.field(static=True, default=False)
    cql_alpha: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if self.double_q and self.target != "network":
            raise ValueError("double_q needs target='network' (a separate target network)")

    Options = QLearnerOptions

    @classmethod
    def from_options(cls, options: QLearnerOptions, context: BuildContext) -> "QLearner":
        """The Q-network of the [network] section, K + 1 heads when it iterates; the
        optimizer's schedule spans the run's gradient steps."""
        if context.continuous:
            raise ValueError(
                f"the Q-learner needs discrete actions; {context.task_id or 'the task'} has continuous actions "
                f"{context.action_shape} (use learner.kind = 'sac')"
            )
        network: NetworkConfig = context.sections["network"]
        if options.target == "selected_head" and network.num_heads < 2:
            raise ValueError(
                "learner.target = 'selected_head' bootstraps head 1 from the selected member's head 0: "
                "it needs network.iterations >= 1"
            )
        if network.batch_norm:
            raise ValueError("network.batch_norm is the SAC critic's option (learner.kind = 'sac')")
        updates = total_updates(context.total_steps, options.warmup, options.update_every)
        return cls(
            make_network=make_network_factory(network, context.obs_shape, network.num_heads, context.num_actions),
            optimizer=make_optimizer(options, updates),
            num_actions=context.num_actions,
            population=options.population,
            masked=options.masked,
            target=options.target,
            loss=options.loss,
            online_forward=options.online_forward,
            double_q=options.double_q,
            diagnostics=options.diagnostics,
            mask_gradients=options.masked and options.max_grad_norm > 0,
            cql_alpha=options.cql_alpha,
        )

    def init(self, key: Array) -> LearnerState:
        keys = jax.random.split(key, self.population)
        # Every member starts from the same weights, so the population is a set of
        # copies of one initial network (EauDeQN's members are pruned copies).
        online = stack_members(lambda _: self.make_network(keys[0]), keys)
        if self.target == "selected_head" and online.num_heads < 2:
            raise ValueError("target='selected_head' needs a network with K + 1 >= 2 heads")
        return new_value_state(online, self.optimizer, target=self.target == "network", masked=self.masked)

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

        Returns the new state and metrics, each with a leading population axis P:
        "loss" (P,) the mean of the trained heads' losses (what train/loss logs, so a
        K-head iS-DQN reads like DQN), "loss_sum" (P,) their sum (the loss that is
        differentiated, and what `loss_sums` accumulates for the selection operators),
        "head_losses" (P, H'), with cql_alpha > 0 "cql_gap" (P,), and with `diagnostics` also "q_mean", "q_max",
        "td_error_std" and "grad_norm" (P,). With target="selected_head", `loss_sums`
        accumulate head 1's loss (the one against the shared bootstrap values) instead.
        """
        num_heads = state.online.num_heads
        trained, source = online_and_source_heads(num_heads)
        element_loss = self._element_loss()
        batch_size = batch.action.shape[0]
        shared_targets = None
        target_next_values = None
        selected_next_values = None
        if self.target == "selected_head":
            # Member 0 is the network the last selection picked: its head 0 at s' is
            # every member's head-1 bootstrap (B, A).
            selected = jax.lax.stop_gradient(select_member(state.online, 0))
            selected_next_values = selected.batched(batch.next_obs)[:, 0]
        elif self.target == "network":
            next_values = state.target.batched(batch.next_obs)[:, source]
            if self.double_q:
                target_next_values = next_values  # valued at each member's own argmax
            else:
                shared_targets = td_targets(batch.reward, batch.discount, next_values)

        def online_values(network: QNetwork) -> tuple[Array, Array]:
            """Q(s) (B, H, A) and the online source heads at s' (B, H', A)."""
            if self.online_forward == "separate":
                next_values = jax.lax.stop_gradient(network).batched(batch.next_obs)
                return network.batched(batch.obs), next_values[:, source]
            # One forward pass on concat(s, s'), as in the iS-QL reference code.
            both = network.batched(jnp.concatenate([batch.obs, batch.next_obs], axis=0))
            return both[:batch_size], both[batch_size:, source]

        def loss_fn(network: QNetwork) -> tuple[Array, tuple[Array, dict[str, Array]]]:
            if shared_targets is not None:
                q_values = network.batched(batch.obs)
                targets = shared_targets
            elif target_next_values is not None:
                # Double DQN: this member's greedy action at s' (same head index as the
                # source head), valued by the target network.
                q_values, selection = online_values(network)
                targets = double_td_targets(batch.reward, batch.discount, target_next_values, selection)
            else:
                q_values, next_values = online_values(network)
                if selected_next_values is not None:
                    next_values = next_values.at[:, 0].set(selected_next_values)
                targets = td_targets(batch.reward, batch.discount, next_values)
            head_losses = iterated_td_losses(q_values[:, trained], batch.action, targets, element_loss)
            stats = self._value_stats(q_values[:, trained], batch.action, targets) if self.diagnostics else {}
            if self.cql_alpha > 0:
                gaps = cql_gaps(q_values[:, trained], batch.action)
                head_losses = head_losses + self.cql_alpha * gaps
                stats = {**stats, "cql_gap": jax.lax.stop_gradient(jnp.mean(gaps))}
            return jnp.sum(head_losses), (head_losses, stats)

        def member_update(network: QNetwork, opt_state: Any, masks: Any):
            (loss, (head_losses, stats)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(network)
            if self.mask_gradients:
                grads = apply_masks(grads, masks)
            if self.diagnostics:
                kept = grads if self.mask_gradients else apply_masks(grads, masks)
                stats = {**stats, "grad_norm": optax.global_norm(kept)}
            params = eqx.filter(network, eqx.is_array)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            network = eqx.apply_updates(network, updates)
            if masks is not None:
                network = apply_masks(network, masks)
                opt_state = mask_optimizer_state(opt_state, masks)
            return network, opt_state, loss, head_losses, stats

        online, opt_state, loss, head_losses, stats = eqx.filter_vmap(member_update)(
            state.online, state.opt_state, state.masks
        )
        # What a selection compares: with a shared bootstrap only for head 1, its loss.
        selection_loss = head_losses[:, 0] if self.target == "selected_head" else loss
        new_state = eqx.tree_at(
            lambda s: (s.online, s.opt_state, s.loss_sums, s.updates),
            state,
            (online, opt_state, state.loss_sums + selection_loss, state.updates + 1),
        )
        metrics = {"loss": jnp.mean(head_losses, axis=-1), "loss_sum": loss, "head_losses": head_losses}
        return new_state, {**metrics, **stats}

    @staticmethod
    def _value_stats(q_values: Array, action: Array, targets: Array) -> dict[str, Array]:
        """q_values: (B, H', A) of the trained heads; targets: (B, H') -> scalars."""
        chosen = jnp.take_along_axis(q_values, action[:, None, None], axis=-1)[..., 0]
        stats = {"q_mean": jnp.mean(chosen), "q_max": jnp.max(q_values), "td_error_std": jnp.std(targets - chosen)}
        return jax.lax.stop_gradient(stats)
