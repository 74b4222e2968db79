"""Soft actor-critic over envpool's continuous tasks, and its sparse and target-free
variants by composition.

The state holds two value sub-states the value-network operators act on unchanged:
`critic` (a population of P twin critics, a target critic or none, masks, loss sums)
and `actor` (one squashed-Gaussian policy, masks when pruned), plus the temperature.
- SAC: P = 1, target = "network", a `polyak` operator (tau 0.005) on the critic.
- CrossQ-style critic: network.batch_norm, target = "online": (s, a) and (s', a') go
  through the critic as ONE batch, no target critic.
- iS-SAC: network.iterations = K (K + 1 heads per critic), target = "online" and a
  `shared_target_shift` operator: head k regresses on head k - 1 at (s', a').
- EauDeSAC: P masked critics against one shared target critic, `prune_select` on the
  critic (target = "keep", Polyak between selections) and `match_sparsity` on the actor.
- PolyPruneSAC: `poly_prune` operators on the critic and on the actor.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.losses import online_and_source_heads
from sparseq.stages.learners.optimizers import make_optimizer, total_updates
from sparseq.stages.learners.options import OptimizerOptions
from sparseq.stages.learners.population import select_member, stack_members
from sparseq.stages.learners.sac_losses import (
    actor_loss,
    critic_losses,
    sample_tanh_gaussian,
    soft_td_targets,
    temperature_loss,
    to_bounds,
)
from sparseq.stages.learners.value_state import HasValueStates, ValueState, new_value_state
from sparseq.stages.networks.actor import GaussianActor
from sparseq.stages.networks.batch_norm import with_running_statistics
from sparseq.stages.networks.critic import CriticNetwork, TwinCritic
from sparseq.stages.networks.options import NetworkConfig
from sparseq.stages.options import Rule
from sparseq.stages.sparsity import apply_masks, mask_optimizer_state
from sparseq.types import Batch


@dataclass(frozen=True)
class SACOptions(OptimizerOptions):
    """The critic is the pipeline's [network] (hidden sizes, heads, LayerNorm, BatchNorm);
    the optimizer knobs apply to critic and actor alike."""

    warmup: int = 5_000
    """Environment steps of uniformly random actions before the first gradient step."""
    target: Literal["network", "online"] = "network"
    """network: a target critic (a polyak or prune_select operator updates it); online:
    bootstrap from the current critic under stop-gradient (CrossQ, iS-SAC)."""
    actor_hidden: tuple[int, ...] = (256, 256)
    actor_learning_rate: float = 0.0
    """0 = learning_rate."""
    temperature_learning_rate: float = 0.0
    """0 = learning_rate."""
    initial_temperature: float = 1.0
    learn_temperature: bool = True
    """Learn alpha towards the target entropy; false keeps initial_temperature."""
    target_entropy_scale: float = 1.0
    """Target entropy = -scale * |A|."""
    policy_delay: int = 1
    """Critic updates per actor and temperature update (CrossQ: 3)."""
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    population: int = 1
    """P online critics learning from the same batches (EauDeSAC's K)."""
    masked: bool = False
    """Sparsity masks on the critics (for prune_select / poly_prune on "critic")."""
    actor_masked: bool = False
    """Sparsity masks on the actor (for poly_prune / match_sparsity on "actor")."""

    def rules(self) -> list[Rule]:
        return [
            *super().rules(),
            ("actor_hidden", len(self.actor_hidden) > 0 and all(h > 0 for h in self.actor_hidden), "sizes must be > 0"),
            ("actor_learning_rate", self.actor_learning_rate >= 0, "must be >= 0 (0 = learning_rate)"),
            ("temperature_learning_rate", self.temperature_learning_rate >= 0, "must be >= 0 (0 = learning_rate)"),
            ("initial_temperature", self.initial_temperature > 0, "must be > 0"),
            ("policy_delay", self.policy_delay >= 1, "must be >= 1"),
            ("log_std_min", self.log_std_min < self.log_std_max, f"must be < log_std_max ({self.log_std_max})"),
            ("population", self.population >= 1, "must be >= 1"),
        ]


class SACState(HasValueStates):
    critic: ValueState  # P twin critics (leading axis P, then 2), target critic or None
    actor: ValueState  # one actor (leading axis 1), no target
    log_alpha: Array  # () float32: log temperature
    temperature_opt_state: Any
    key: Array  # the update's own random stream (next actions, policy samples)

    default_value: ClassVar[str] = "critic"


def _optimizer_step(network: Any, grads: Any, opt_state: Any, masks: Any, optimizer: optax.GradientTransformation):
    """One optax step of `network`; pruned weights and their moments stay exactly zero."""
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(network, eqx.is_array))
    network = eqx.apply_updates(network, updates)
    if masks is not None:
        network = apply_masks(network, masks)
        opt_state = mask_optimizer_state(opt_state, masks)
    return network, opt_state


class SACLearner(eqx.Module):
    """Attributes:
    make_critic: key -> TwinCritic; make_actor: key -> GaussianActor.
    critic_optimizer, actor_optimizer, temperature_optimizer: optax transformations.
    action_low, action_high: (A,) bounds of the action space.
    population: P online critics; masked / actor_masked: sparsity masks.
    target: "network" (target critic) or "online" (stop-gradient current critic).
    policy_delay: critic updates per actor update.
    target_entropy: -scale * |A|.
    """

    make_critic: Callable[[Array], TwinCritic] = eqx.field(static=True)
    make_actor: Callable[[Array], GaussianActor] = eqx.field(static=True)
    critic_optimizer: optax.GradientTransformation = eqx.field(static=True)
    actor_optimizer: optax.GradientTransformation = eqx.field(static=True)
    temperature_optimizer: optax.GradientTransformation = eqx.field(static=True)
    action_low: tuple[float, ...] = eqx.field(static=True)
    action_high: tuple[float, ...] = eqx.field(static=True)
    population: int = eqx.field(static=True, default=1)
    masked: bool = eqx.field(static=True, default=False)
    actor_masked: bool = eqx.field(static=True, default=False)
    target: Literal["network", "online"] = eqx.field(static=True, default="network")
    policy_delay: int = eqx.field(static=True, default=1)
    learn_temperature: bool = eqx.field(static=True, default=True)
    initial_temperature: float = eqx.field(static=True, default=1.0)
    target_entropy: float = eqx.field(static=True, default=-1.0)
    log_std_min: float = eqx.field(static=True, default=-20.0)
    log_std_max: float = eqx.field(static=True, default=2.0)

    Options = SACOptions

    @property
    def optimizer(self) -> optax.GradientTransformation:
        """The critic's optimizer: what the selection operator's "reset" re-initialises."""
        return self.critic_optimizer

    @classmethod
    def from_options(cls, options: SACOptions, context: BuildContext) -> "SACLearner":
        if not context.continuous:
            raise ValueError(
                f"the sac learner needs continuous actions; {context.task_id or 'the task'} has "
                f"{context.num_actions} discrete actions (use learner.kind = 'q')"
            )
        network: NetworkConfig = context.sections["network"]
        if network.kind != "mlp":
            raise ValueError(f"the SAC critic is an MLP over vector observations; network.kind is {network.kind!r}")
        if network.batch_norm and options.target == "network":
            raise ValueError(
                "a BatchNorm critic (network.batch_norm, CrossQ) has no target critic: set learner.target = 'online'"
            )
        obs_features = 1
        for size in context.obs_shape:
            obs_features *= size
        action_dim = context.action_shape[0]
        init = "lecun_normal" if network.init == "auto" else network.init

        def make_critic(key: Array) -> TwinCritic:
            def one(k: Array) -> CriticNetwork:
                return CriticNetwork(
                    obs_features + action_dim,
                    network.hidden,
                    network.num_heads,
                    layer_norm=network.layer_norm,
                    batch_norm=network.batch_norm,
                    batch_norm_momentum=network.batch_norm_momentum,
                    init=init,
                    key=k,
                )

            return TwinCritic(one, key=key)

        def make_actor(key: Array) -> GaussianActor:
            return GaussianActor(obs_features, options.actor_hidden, action_dim, init=init, key=key)

        updates = total_updates(context.total_steps, options.warmup, options.update_every)
        actor_updates = max(1, updates // options.policy_delay)
        temperature_lr = options.temperature_learning_rate or options.learning_rate
        return cls(
            make_critic=make_critic,
            make_actor=make_actor,
            critic_optimizer=make_optimizer(options, updates),
            actor_optimizer=make_optimizer(options, actor_updates, options.actor_learning_rate),
            temperature_optimizer=optax.adam(temperature_lr, b1=options.adam_b1, eps=options.adam_eps),
            action_low=tuple(context.action_low),
            action_high=tuple(context.action_high),
            population=options.population,
            masked=options.masked,
            actor_masked=options.actor_masked,
            target=options.target,
            policy_delay=options.policy_delay,
            learn_temperature=options.learn_temperature,
            initial_temperature=options.initial_temperature,
            target_entropy=-options.target_entropy_scale * action_dim,
            log_std_min=options.log_std_min,
            log_std_max=options.log_std_max,
        )

    def init(self, key: Array) -> SACState:
        critic_key, actor_key, key = jax.random.split(key, 3)
        # Every critic starts from the same weights (EauDeSAC's members are pruned copies).
        critics = stack_members(lambda _: self.make_critic(critic_key), jax.random.split(critic_key, self.population))
        actor = stack_members(self.make_actor, actor_key[None])
        log_alpha = jnp.log(jnp.asarray(self.initial_temperature, jnp.float32))
        return SACState(
            critic=new_value_state(critics, self.critic_optimizer, target=self.target == "network", masked=self.masked),
            actor=new_value_state(actor, self.actor_optimizer, target=False, masked=self.actor_masked),
            log_alpha=log_alpha,
            temperature_opt_state=self.temperature_optimizer.init(log_alpha),
            key=key,
        )

    # Acting -------------------------------------------------------------------------

    def _bounds(self) -> tuple[Array, Array]:
        return jnp.asarray(self.action_low, jnp.float32), jnp.asarray(self.action_high, jnp.float32)

    def _distribution(self, actor: GaussianActor, obs: Array) -> tuple[Array, Array]:
        mean, log_std = actor.batched(obs)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)

    def policy(self, actor: GaussianActor, obs: Array, key: Array) -> tuple[Array, Array]:
        """obs: (B, *obs_shape) -> (actions in the action space (B, A), log_prob (B,))."""
        squashed, log_prob = sample_tanh_gaussian(key, *self._distribution(actor, obs))
        return to_bounds(squashed, *self._bounds()), log_prob

    def act(self, state: SACState, obs: Array, key: Array, epsilon: Array) -> Array:
        """Policy samples, or with probability epsilon uniform actions (the warm-up's
        exploration schedule). obs: (N, *obs_shape) -> (N, A) float32."""
        policy_key, explore_key, random_key = jax.random.split(key, 3)
        actions, _ = self.policy(select_member(state.actor.online, 0), obs, policy_key)
        low, high = self._bounds()
        random_actions = jax.random.uniform(random_key, actions.shape, minval=low, maxval=high)
        explore = jax.random.uniform(explore_key, (obs.shape[0], 1)) < epsilon
        return jnp.where(explore, random_actions, actions)

    def act_deterministic(self, state: SACState, obs: Array) -> Array:
        """The policy's mean action, squashed: what evaluation plays. (N, ...) -> (N, A)."""
        mean, _ = self._distribution(select_member(state.actor.online, 0), obs)
        return to_bounds(jnp.tanh(mean), *self._bounds())

    # Learning -----------------------------------------------------------------------

    def update(self, state: SACState, batch: Batch) -> tuple[SACState, dict[str, Array]]:
        """One critic step of every critic on the batch, then (every policy_delay critic
        steps) one actor and temperature step against the acting critic.

        Metrics: "loss" (P,) mean of the trained heads' critic losses, "loss_sum" (P,)
        their sum (what loss_sums accumulates for the selection), "head_losses" (P, H'),
        "actor_loss", "temperature", "entropy" () (of the last actor step).
        """
        next_key, policy_key, key = jax.random.split(state.key, 3)
        critic, actor_values = state.critic, state.actor
        trained, source = online_and_source_heads(critic.online.num_heads)
        alpha = jnp.exp(state.log_alpha)
        actor = select_member(actor_values.online, 0)
        next_action, next_log_prob = self.policy(actor, batch.next_obs, next_key)
        next_action, next_log_prob = jax.lax.stop_gradient((next_action, next_log_prob))
        b = batch.reward.shape[0]
        shared_targets = None
        if self.target == "network":
            next_values, _ = critic.target.batched(batch.next_obs, next_action)
            shared_targets = soft_td_targets(
                batch.reward, batch.discount, next_values[..., source], next_log_prob, alpha
            )

        def critic_loss_fn(network: TwinCritic):
            if shared_targets is not None:
                values, updated = network.batched(batch.obs, batch.action, train=True)
                targets = shared_targets
            else:
                # One batch through the critic: the BatchNorm statistics cover s and s'.
                obs = jnp.concatenate([batch.obs, batch.next_obs], axis=0)
                action = jnp.concatenate([batch.action.astype(jnp.float32), next_action], axis=0)
                both, updated = network.batched(obs, action, train=True)
                values = both[:b]
                next_values = jax.lax.stop_gradient(both[b:, :, source])
                targets = soft_td_targets(batch.reward, batch.discount, next_values, next_log_prob, alpha)
            head_losses = critic_losses(values[..., trained], targets)
            return jnp.sum(head_losses), (head_losses, updated)

        def member_update(network: TwinCritic, opt_state: Any, masks: Any):
            (loss, (head_losses, updated)), grads = eqx.filter_value_and_grad(critic_loss_fn, has_aux=True)(network)
            network, opt_state = _optimizer_step(network, grads, opt_state, masks, self.critic_optimizer)
            return with_running_statistics(network, updated), opt_state, loss, head_losses

        online, opt_state, loss, head_losses = eqx.filter_vmap(member_update)(
            critic.online, critic.opt_state, critic.masks
        )
        critic = eqx.tree_at(
            lambda s: (s.online, s.opt_state, s.loss_sums, s.updates),
            critic,
            (online, opt_state, critic.loss_sums + loss, critic.updates + 1),
        )
        acting_critic = jax.lax.stop_gradient(select_member(critic.online, critic.acting_member))
        operands = (actor_values, state.log_alpha, state.temperature_opt_state)

        def policy_step(operands):
            return self._policy_step(*operands, acting_critic, batch.obs, policy_key, trained)

        if self.policy_delay == 1:
            (actor_values, log_alpha, temperature_opt_state), policy_metrics = policy_step(operands)
        else:
            due = (critic.updates - 1) % self.policy_delay == 0
            empty = jax.eval_shape(policy_step, operands)[1]

            def skip(operands):
                return operands, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), empty)

            (actor_values, log_alpha, temperature_opt_state), policy_metrics = jax.lax.cond(
                due, policy_step, skip, operands
            )
        new_state = SACState(
            critic=critic,
            actor=actor_values,
            log_alpha=log_alpha,
            temperature_opt_state=temperature_opt_state,
            key=key,
        )
        metrics = {"loss": jnp.mean(head_losses, axis=-1), "loss_sum": loss, "head_losses": head_losses}
        return new_state, {**metrics, **policy_metrics}

    def _policy_step(
        self,
        actor_values: ValueState,
        log_alpha: Array,
        temperature_opt_state: Any,
        critic: TwinCritic,
        obs: Array,
        key: Array,
        trained: slice,
    ) -> tuple[tuple[ValueState, Array, Any], dict[str, Array]]:
        alpha = jnp.exp(log_alpha)

        def loss_fn(actor: GaussianActor):
            action, log_prob = self.policy(actor, obs, key)
            # Running statistics for a BatchNorm critic (CrossQ evaluates it so here).
            values, _ = critic.batched(obs, action, train=False)  # (B, 2, H)
            q_values = jnp.min(jnp.mean(values[..., trained], axis=-1), axis=1)
            return actor_loss(q_values, log_prob, alpha), log_prob

        actor = select_member(actor_values.online, 0)
        opt_state = select_member(actor_values.opt_state, 0)
        masks = None if actor_values.masks is None else select_member(actor_values.masks, 0)
        (loss, log_prob), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(actor)
        actor, opt_state = _optimizer_step(actor, grads, opt_state, masks, self.actor_optimizer)
        expand = lambda tree: jax.tree.map(lambda x: x[None] if eqx.is_array(x) else x, tree)  # noqa: E731
        actor_values = eqx.tree_at(
            lambda s: (s.online, s.opt_state, s.loss_sums, s.updates),
            actor_values,
            (expand(actor), expand(opt_state), actor_values.loss_sums + loss, actor_values.updates + 1),
        )
        if self.learn_temperature:
            grad = jax.grad(temperature_loss)(log_alpha, log_prob, self.target_entropy)
            step, temperature_opt_state = self.temperature_optimizer.update(grad, temperature_opt_state, log_alpha)
            log_alpha = optax.apply_updates(log_alpha, step)
        metrics = {"actor_loss": loss, "temperature": alpha, "entropy": -jnp.mean(log_prob)}
        return (actor_values, log_alpha, temperature_opt_state), metrics
