"""EauDeQN's pruning-selection operator: the target update of a population of K
masked online networks that all regress on one shared target.

At every target update (every `period` environment steps, once learning has begun):
1. k* = argmin of the per-network loss sums of the period, NaN ignored (a network
   whose loss diverged is never picked; if all are NaN, network 0 is kept).
2. The target becomes a copy of network k* (option `target = "keep"`: another
   operator, e.g. a polyak update, moves it instead); the loss sums are reset.
3. Network 0 becomes a copy of the winner at the SAME sparsity (same mask);
   network k = 1..K-1 becomes the winner with a further k * rho / (K - 1) of its
   remaining weights pruned (lowest magnitude first, per layer or globally).
4. Optimizer state: every network gets the winner's state, masked by its own mask
   ("copy"), or a fresh one ("reset").
Every mask is a subset of the winner's, and the winner is one of the networks, so the
target's sparsity never decreases; it grows only when a sparser student fits the
target better over a whole period. After `horizon_step` environment steps nothing is
pruned any more: all K networks restart as copies of the winner.

Acting uses network 0, i.e. the network currently selected as target, as it goes on
learning (the learner's `acting_member` is set to 0 at every selection).

Over iS networks (sparse iS-QL, the learner's target = "selected_head") there is no
target network: member 0's head 0 is the shared target, and the learner's loss sums are
the head-1 losses against it, so step 1 compares like with like; step 2 has nothing to
copy (network 0 IS the winner), and a `shared_target_shift` listed after this operator
then moves every member's heads, making the winner's trained head 1 the new target.
"""

from dataclasses import dataclass
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from sparseq.stages.context import BuildContext
from sparseq.stages.learners.population import population_size, select_member
from sparseq.stages.learners.value_state import ValueState
from sparseq.stages.operators.base import ValueOperator, ValueOperatorOptions, period_crossed
from sparseq.stages.options import Rule
from sparseq.stages.sparsity import (
    Criterion,
    apply_masks,
    mask_optimizer_state,
    prune_remaining,
    sparsity_stats,
)


class PruneSelectState(eqx.Module):
    selected: Array  # () int32: index of the network picked at the last target update
    loss_sums: Array  # (K,) float32: each network's summed loss over the last period
    member_sparsity: Array  # (K,) float32: each online network's overall sparsity now
    target_sparsity: dict[str, Array]  # "overall" and per-layer sparsity of the target
    selections: Array  # () int32: target updates so far


def nan_argmin(values: Array) -> Array:
    """Index of the smallest non-NaN value (0 if every value is NaN). values: (K,)."""
    return jnp.argmin(jnp.where(jnp.isnan(values), jnp.inf, values)).astype(jnp.int32)


def prune_fractions(num_networks: int, max_fraction: float) -> Array:
    """(K,) fraction of the winner's remaining weights network k prunes: k * rho / (K-1)."""
    return jnp.arange(num_networks, dtype=jnp.float32) * (max_fraction / (num_networks - 1))


def random_prune_fractions(num_networks: int, max_fraction: float, losses: Array) -> Array:
    """(K,): network 0 prunes nothing, networks 1..K-1 each a fraction drawn uniformly
    from [0, rho). The draw's key is derived from the period's loss sums `losses` (K,):
    different at every selection and for every seed, and exact on resume."""
    key = jax.random.key(0x5E1EC7)
    for bits in jax.lax.bitcast_convert_type(losses.astype(jnp.float32), jnp.uint32):
        key = jax.random.fold_in(key, bits)
    draws = jax.random.uniform(key, (num_networks - 1,), maxval=max_fraction)
    return jnp.concatenate([jnp.zeros((1,), jnp.float32), draws])


@dataclass(frozen=True)
class PruneSelectOptions(ValueOperatorOptions):
    """EauDeQN: at every target update (every `period` steps) the network of the
    learner's population with the smallest summed loss becomes the target and the
    population is rebuilt from it at increasing sparsity. It IS the target update:
    a pipeline lists it instead of target_sync."""

    period: int = 200
    """T, environment steps between target updates (selections)."""
    num_networks: int = 0
    """K >= 2, the learner's population (learner.population); 0 = whatever it holds."""
    max_prune_fraction: float = 0.2
    """rho in (0, 1): network k = 0..K-1 prunes k * rho / (K - 1) of the winner's
    remaining weights at every target update."""
    prune_amounts: Literal["spaced", "random"] = "spaced"
    """spaced: network k prunes k * rho / (K - 1); random: networks 1..K-1 each draw a
    fraction uniformly from [0, rho) at every selection. "random" is OUR READING of the
    undocumented `max_noise` of the authors' released configuration (random per-member
    pruning amounts), not a documented fact; its value 3.0 has no role in it."""
    criterion: Literal["layer", "global"] = "layer"
    """Magnitude pruning per layer (each layer loses the same fraction) or global."""
    optimizer_state: Literal["copy", "reset"] = "copy"
    """copy: every network gets the winner's optimizer state, masked; reset: fresh."""
    horizon: float = 0.8
    """Fraction of run.total_steps after which sparsity is frozen."""
    target: Literal["copy", "keep"] = "copy"
    """copy: the target becomes the winner (EauDeQN; the selection IS the target
    update); keep: the target is left to another operator, e.g. a polyak update that
    follows the selected network between selections (EauDeSAC)."""

    def rules(self) -> list[Rule]:
        return [
            ("period", self.period >= 1, "must be >= 1"),
            ("num_networks", self.num_networks == 0 or self.num_networks >= 2, "must be >= 2 (K networks), or 0"),
            ("max_prune_fraction", 0 < self.max_prune_fraction < 1, "must be in (0, 1)"),
            ("horizon", 0 <= self.horizon <= 1, "must be in [0, 1] (a fraction of training)"),
        ]


class PruneSelect(ValueOperator):
    """Attributes:
    period: T, environment steps between target updates (replaces TargetSync).
    num_networks: K >= 2, must equal the learner's population.
    max_prune_fraction: rho in (0, 1): network K-1 prunes this fraction of the
        winner's remaining weights at every target update.
    criterion: "layer" (each layer loses the same fraction) or "global".
    optimizer_state: "copy" (the winner's, masked) or "reset" (optimizer.init).
    horizon_step: environment steps after which sparsity is frozen.
    optimizer: the learner's optimizer (needed for "reset").
    copies_target: the target becomes the winner (else another operator updates it).
    prune_amounts: "spaced" (network k prunes k * rho / (K - 1)) or "random" (networks
        1..K-1 draw their fractions from [0, rho) at each selection; a reading of the
        authors' undocumented `max_noise`).
    member_target: the learner bootstraps from member 0's head 0 (sparse iS-QL,
        learner target = "selected_head") instead of a target network.

    Metrics (every iteration, values as of the last target update):
    "target_updated" () bool, "population/selected" () int32,
    "population/loss_sum" (K,), "population/sparsity" (K,),
    "sparsity/overall" and "sparsity/<layer>" of the target (fractions pruned).
    """

    owns = ("target_update", "masks")
    Options = PruneSelectOptions

    @classmethod
    def roles(cls, options: PruneSelectOptions) -> tuple[str, ...]:
        return cls.owns if getattr(options, "target", "copy") == "copy" else ("masks",)

    def owned_roles(self) -> tuple[str, ...]:
        return self.owns if self.copies_target else ("masks",)

    period: int = eqx.field(static=True)
    num_networks: int = eqx.field(static=True)
    optimizer: optax.GradientTransformation = eqx.field(static=True)
    max_prune_fraction: float = eqx.field(static=True, default=0.2)
    criterion: Criterion = eqx.field(static=True, default="layer")
    optimizer_state: Literal["copy", "reset"] = eqx.field(static=True, default="copy")
    horizon_step: int = eqx.field(static=True, default=2**31 - 1)
    copies_target: bool = eqx.field(static=True, default=True)
    prune_amounts: Literal["spaced", "random"] = eqx.field(static=True, default="spaced")
    member_target: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.num_networks < 2:
            raise ValueError(
                f"PruneSelect needs num_networks >= 2 (K networks: learner.population), got {self.num_networks}"
            )
        if not 0 < self.max_prune_fraction < 1:
            raise ValueError(f"PruneSelect needs 0 < max_prune_fraction < 1, got {self.max_prune_fraction}")

    @classmethod
    def from_options(cls, options: PruneSelectOptions, context: BuildContext) -> "PruneSelect":
        learner = context.learner
        population = getattr(learner, "population", 0)
        if options.num_networks and population and options.num_networks != population:
            raise ValueError(
                f"the learner holds a population of {population} (learner.population); the selection names "
                f"num_networks = {options.num_networks}"
            )
        if options.optimizer_state == "reset" and not hasattr(learner, "optimizer"):
            raise ValueError("optimizer_state = 'reset' needs a learner with an `optimizer`")
        return cls(
            period=options.period,
            num_networks=options.num_networks or population,
            optimizer=getattr(learner, "optimizer", None),
            max_prune_fraction=options.max_prune_fraction,
            criterion=options.criterion,
            optimizer_state=options.optimizer_state,
            horizon_step=round(options.horizon * context.total_steps),
            copies_target=options.target == "copy",
            prune_amounts=options.prune_amounts,
            member_target=getattr(learner, "target", None) == "selected_head",
            on=options.on,
        )

    def init_value(self, learner_state: ValueState) -> PruneSelectState:
        if learner_state.masks is None:
            raise ValueError("the pruning selection needs a masked learner (learner.masked = true)")
        if learner_state.target is None and not self.member_target:
            # Over self-bootstrapping networks (iS-QL, TF-DQN) each loss is measured
            # against the network's own heads, so the losses are not comparable: a
            # heavily pruned network fits its own shrunken targets best and wins (tried:
            # CartPole collapsed to 98.8% sparsity). Sparse iS-QL shares member 0's head 0.
            raise ValueError(
                "the pruning selection needs one shared target: learner.target = 'network', or 'selected_head' "
                "for iS networks (sparse iS-QL)"
            )
        size = population_size(learner_state.online)
        if size != self.num_networks:
            raise ValueError(
                f"the selection has num_networks = {self.num_networks} but the learner holds {size} "
                "(learner.population)"
            )
        member_masks = select_member(learner_state.masks, 0)
        return PruneSelectState(
            selected=jnp.zeros((), jnp.int32),
            loss_sums=jnp.zeros((self.num_networks,), jnp.float32),
            member_sparsity=jax.vmap(lambda m: sparsity_stats(m)["overall"])(learner_state.masks),
            target_sparsity=sparsity_stats(member_masks),
            selections=jnp.zeros((), jnp.int32),
        )

    def select(self, state: PruneSelectState, ls: ValueState, steps_after: Array) -> tuple[Any, ValueState]:
        """The target update itself (unconditional; `__call__` gates it)."""
        losses = ls.loss_sums
        winner_index = nan_argmin(losses)
        winner = select_member(ls.online, winner_index)
        winner_masks = select_member(ls.masks, winner_index)
        pruning = steps_after <= self.horizon_step
        if self.prune_amounts == "random":
            fractions = random_prune_fractions(self.num_networks, self.max_prune_fraction, losses)
        else:
            fractions = prune_fractions(self.num_networks, self.max_prune_fraction)
        fractions = fractions * pruning
        masks = jax.vmap(lambda f: prune_remaining(winner, winner_masks, f, self.criterion))(fractions)
        online = eqx.filter_vmap(lambda m: apply_masks(winner, m))(masks)
        if self.optimizer_state == "reset":
            opt_state = jax.vmap(self.optimizer.init)(eqx.filter(online, eqx.is_array))
        else:
            winner_opt = select_member(ls.opt_state, winner_index)
            opt_state = jax.vmap(lambda m: mask_optimizer_state(winner_opt, m))(masks)
        target = winner if self.copies_target and ls.target is not None else ls.target
        ls = eqx.tree_at(
            lambda s: (s.online, s.target, s.opt_state, s.masks, s.loss_sums, s.acting_member),
            ls,
            (online, target, opt_state, masks, jnp.zeros_like(ls.loss_sums), jnp.zeros((), jnp.int32)),
        )
        state = PruneSelectState(
            selected=winner_index,
            loss_sums=losses,
            member_sparsity=jax.vmap(lambda m: sparsity_stats(m)["overall"])(masks),
            target_sparsity=sparsity_stats(winner_masks),
            selections=state.selections + 1,
        )
        return state, ls

    def apply(
        self, state: PruneSelectState, learner_state: ValueState, steps_before: Array, steps_after: Array
    ) -> tuple[PruneSelectState, ValueState, dict[str, Array]]:
        # Before the first gradient step every loss sum is 0 and every network is the
        # same; a selection then would only prune untrained weights.
        due = period_crossed(self.period, steps_before, steps_after) & (learner_state.updates > 0)

        def update(operands):
            return self.select(*operands, steps_after)

        # Sorting and copying only: no convolution runs inside this cond.
        state, learner_state = jax.lax.cond(due, update, lambda operands: operands, (state, learner_state))
        metrics = {
            "target_updated": due,
            "population/selected": state.selected,
            "population/loss_sum": state.loss_sums,
            "population/sparsity": state.member_sparsity,
            **{f"sparsity/{name}": value for name, value in state.target_sparsity.items()},
        }
        return state, learner_state, metrics
