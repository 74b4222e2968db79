"""EauDeQN: the masked population learner and the PruneSelect operator, their pipeline
files and bad-input errors, and one tiny end-to-end run."""

import functools
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparseq.pipeline.config import ConfigError, load_pipeline
from sparseq.pipeline.config.build import build_pipeline, make_network_factory
from sparseq.stages.learners.population import gather_members, select_member, stack_members
from sparseq.stages.learners.q_learner import LearnerState, QLearner
from sparseq.stages.networks import MLPTorso, QNetwork
from sparseq.stages.operators import PolyPrune, PruneSelect, TargetSync
from sparseq.stages.operators.prune_select import nan_argmin, prune_fractions
from sparseq.stages.sparsity import apply_masks, mask_optimizer_state, masked_weights, prune_remaining, sparsity_stats
from sparseq.types import Batch

OPTIMIZER = optax.adam(1e-3)


def make_network(key) -> QNetwork:
    k1, k2 = jax.random.split(key)
    return QNetwork(MLPTorso(4, (16, 16), key=k1), 1, 2, "lecun_normal", key=k2)


def learner(population: int) -> QLearner:
    return QLearner(make_network=make_network, optimizer=OPTIMIZER, num_actions=2, population=population, masked=True)


def batch(key, size: int = 32) -> Batch:
    k = jax.random.split(key, 4)
    return Batch(
        obs=jax.random.normal(k[0], (size, 4)),
        action=jax.random.randint(k[1], (size,), 0, 2),
        reward=jax.random.normal(k[2], (size,)),
        discount=jnp.full((size,), 0.99),
        next_obs=jax.random.normal(k[3], (size, 4)),
    )


def distinct_sparse_state(population: int, fractions) -> LearnerState:
    """Members with their own weights and their own sparsity (fractions[k] pruned)."""
    return _distinct_sparse_state(population, jnp.asarray(fractions, jnp.float32))


@functools.partial(jax.jit, static_argnums=0)  # eager, every small op would compile alone
def _distinct_sparse_state(population: int, fractions: jax.Array) -> LearnerState:
    state = learner(population).init(jax.random.key(0))
    online = stack_members(make_network, jax.random.split(jax.random.key(1), population))
    masks = eqx.filter_vmap(lambda net, m, f: prune_remaining(net, m, f))(online, state.masks, fractions)
    online = apply_masks(online, masks)
    opt_state = jax.vmap(OPTIMIZER.init)(eqx.filter(online, eqx.is_array))
    return eqx.tree_at(lambda s: (s.online, s.opt_state, s.masks), state, (online, opt_state, masks))


def with_loss_sums(state: LearnerState, values) -> LearnerState:
    state = eqx.tree_at(lambda s: s.loss_sums, state, jnp.asarray(values, jnp.float32))
    return eqx.tree_at(lambda s: s.updates, state, jnp.asarray(1, jnp.int32))


def trees_equal(a, b) -> bool:
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def operator(**kwargs) -> PruneSelect:
    return PruneSelect(**{"period": 10, "num_networks": 4, "optimizer": OPTIMIZER, **kwargs})


def jitted(op: PruneSelect):
    """The operator's call compiled once (eager lax.cond would recompile every call)."""
    return jax.jit(op.__call__)


def test_pruned_weights_stay_exactly_zero_over_200_updates_with_selections():
    op = operator(max_prune_fraction=0.5)
    learn = learner(4)
    state = distinct_sparse_state(4, [0.0, 0.2, 0.4, 0.6])
    initial = state.online
    op_state = op.init(state)

    def step(carry, i):
        ls, st = carry
        ls, _ = learn.update(ls, batch(jax.random.fold_in(jax.random.key(2), i)))
        st, ls, metrics = op(st, ls, i, i + 1)  # one env step per update: 20 selections
        return (ls, st), metrics["sparsity/overall"]

    (state, op_state), target_sparsity = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(200)))((state, op_state))
    assert int(op_state.selections) == 20
    assert bool(jnp.all(jnp.diff(target_sparsity) >= 0))
    for k in range(4):
        member, masks = select_member(state.online, k), select_member(state.masks, k)
        adam = select_member(state.opt_state, k)[0]
        for w, mu, nu, m in zip(
            masked_weights(member, masks), masked_weights(adam.mu, masks), masked_weights(adam.nu, masks),
            jax.tree.leaves(masks),
        ):  # fmt: skip
            assert int(jnp.sum(~m)) > 0
            assert bool(jnp.all(w[~m] == 0)) and bool(jnp.all(mu[~m] == 0)) and bool(jnp.all(nu[~m] == 0))
            assert bool(jnp.all(w[m] != 0))
    # The weights did train.
    moved = masked_weights(select_member(state.online, 0), select_member(state.masks, 0))
    start = masked_weights(select_member(initial, 0), select_member(state.masks, 0))
    assert all(float(jnp.max(jnp.abs(a - b))) > 1e-3 for a, b in zip(moved, start))


def test_selection_is_nan_ignoring_argmin_and_network_zero_keeps_the_winner():
    op = operator()
    state = with_loss_sums(distinct_sparse_state(4, [0.0, 0.1, 0.3, 0.5]), [np.nan, 3.0, 1.0, 2.0])
    op_state = op.init(state)
    winner, winner_masks = select_member(state.online, 2), select_member(state.masks, 2)
    op_state, new, metrics = op(op_state, state, jnp.asarray(9), jnp.asarray(10))
    assert int(metrics["population/selected"]) == 2 and bool(metrics["target_updated"])
    np.testing.assert_array_equal(metrics["population/loss_sum"], [np.nan, 3.0, 1.0, 2.0])
    assert trees_equal(new.target, winner)
    assert trees_equal(select_member(new.online, 0), winner)
    assert trees_equal(select_member(new.masks, 0), winner_masks)
    target_sparsity = float(sparsity_stats(winner_masks)["overall"])
    assert float(metrics["sparsity/overall"]) == pytest.approx(target_sparsity)
    assert float(metrics["population/sparsity"][0]) == pytest.approx(target_sparsity)
    assert bool(jnp.all(new.loss_sums == 0)) and int(new.acting_member) == 0
    # Networks 1..K-1: the winner pruned by k * rho / (K - 1) of what it kept, nested.
    kept = [int(jnp.sum(m)) for m in jax.tree.leaves(winner_masks)]
    for k, fraction in enumerate(np.asarray(prune_fractions(4, 0.2))):
        masks = select_member(new.masks, k)
        for m, w, before in zip(jax.tree.leaves(masks), jax.tree.leaves(winner_masks), kept):
            assert not bool(jnp.any(m & ~w))
            assert abs((before - int(jnp.sum(m))) - fraction * before) <= 1
    assert nan_argmin(jnp.array([jnp.nan, jnp.nan])) == 0
    assert nan_argmin(jnp.array([2.0, jnp.nan, 2.0, 1.5])) == 3


def test_sparsity_never_decreases_and_grows_only_when_a_sparser_network_wins():
    op = operator(max_prune_fraction=0.3)
    state = distinct_sparse_state(4, [0.0, 0.0, 0.0, 0.0])
    op_state = op.init(state)
    call = jitted(op)
    # All networks start dense: a first selection lays out the ladder of sparsities.
    state = with_loss_sums(state, [0.0, 1.0, 2.0, 3.0])
    op_state, state, metrics = call(op_state, state, jnp.asarray(9), jnp.asarray(10))
    assert float(metrics["sparsity/overall"]) == 0.0
    rng = np.random.default_rng(0)
    for i in range(1, 13):
        previous = float(metrics["sparsity/overall"])
        ladder = np.asarray(metrics["population/sparsity"])
        assert ladder[0] == pytest.approx(previous) and bool(np.all(np.diff(ladder) > 0))
        losses = rng.uniform(size=4)
        state = with_loss_sums(state, losses)
        op_state, state, metrics = call(op_state, state, jnp.asarray(10 * i + 9), jnp.asarray(10 * i + 10))
        now = float(metrics["sparsity/overall"])
        assert now == pytest.approx(ladder[int(np.argmin(losses))])
        assert now >= previous and (now > previous) == (int(np.argmin(losses)) > 0)
    assert now > 0.3


def test_gating_horizon_and_optimizer_state_policies():
    state = with_loss_sums(distinct_sparse_state(4, [0.0, 0.1, 0.2, 0.3]), [4.0, 3.0, 2.0, 1.0])
    op = operator(horizon_step=100)
    op_state = op.init(state)
    call = jitted(op)
    # No period crossed, or no gradient step yet: nothing happens.
    _, same, metrics = call(op_state, state, jnp.asarray(3), jnp.asarray(4))
    assert trees_equal(same, state) and not bool(metrics["target_updated"])
    fresh = eqx.tree_at(lambda s: s.updates, state, jnp.asarray(0, jnp.int32))
    _, same, _ = call(op_state, fresh, jnp.asarray(9), jnp.asarray(10))
    assert trees_equal(same, fresh)
    # After the horizon every network restarts as the winner, at its sparsity.
    _, late, _ = call(op_state, state, jnp.asarray(109), jnp.asarray(110))
    winner_masks = select_member(state.masks, 3)
    for k in range(4):
        assert trees_equal(select_member(late.masks, k), winner_masks)
    # "copy": the winner's moments, masked by each network's own mask.
    grads = jax.tree.map(jnp.ones_like, eqx.filter(state.online, eqx.is_array))
    _, opt = jax.vmap(OPTIMIZER.update)(grads, state.opt_state)
    state = eqx.tree_at(lambda s: s.opt_state, state, opt)
    _, copied, _ = call(op_state, state, jnp.asarray(9), jnp.asarray(10))
    winner_opt = select_member(state.opt_state, 3)
    for k in range(4):
        expected = mask_optimizer_state(winner_opt, select_member(copied.masks, k))
        assert trees_equal(select_member(copied.opt_state, k), expected)
    _, reset, _ = jitted(operator(optimizer_state="reset"))(op_state, state, jnp.asarray(9), jnp.asarray(10))
    assert trees_equal(reset.opt_state, jax.vmap(OPTIMIZER.init)(eqx.filter(reset.online, eqx.is_array)))


def test_operator_refuses_a_mismatched_learner():
    with pytest.raises(ValueError, match="num_networks"):
        operator().init(learner(3).init(jax.random.key(0)))
    dense = QLearner(make_network=make_network, optimizer=OPTIMIZER, num_actions=2, population=4)
    with pytest.raises(ValueError, match="masked"):
        operator().init(dense.init(jax.random.key(0)))
    with pytest.raises(ValueError, match="num_networks >= 2"):
        operator(num_networks=1)


def test_vmapped_population_update_equals_separate_updates():
    population = 3
    state = distinct_sparse_state(population, [0.0, 0.3, 0.6])
    state = eqx.tree_at(lambda s: s.target, state, make_network(jax.random.key(7)))
    batches = [batch(jax.random.key(10 + i)) for i in range(3)]
    update = jax.jit(learner(population).update)
    together = state
    for b in batches:
        together, metrics = update(together, b)
    single = jax.jit(learner(1).update)
    for k in range(population):
        idx = jnp.array([k])
        alone = LearnerState(
            online=gather_members(state.online, idx),
            target=state.target,
            opt_state=gather_members(state.opt_state, idx),
            masks=gather_members(state.masks, idx),
            loss_sums=jnp.zeros((1,)),
            acting_member=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )
        for b in batches:
            alone, alone_metrics = single(alone, b)
        for a, b in zip(jax.tree.leaves(alone.online), jax.tree.leaves(gather_members(together.online, idx))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.loss_sums[0], together.loss_sums[k], rtol=1e-5)
        np.testing.assert_allclose(alone_metrics["loss"][0], metrics["loss"][k], rtol=1e-5)


@pytest.mark.parametrize(
    ("pipeline", "overrides", "key"),
    [
        ("eaudedqn-cartpole", ["--operators.prune-select.num-networks", "1"], "operators.prune_select.num_networks"),
        ("eaudedqn-cartpole", ["--operators.prune-select.max-prune-fraction", "0"], "max_prune_fraction"),
        ("eaudedqn-cartpole", ["--operators.prune-select.max-prune-fraction", "1"], "max_prune_fraction"),
        ("eaudedqn-cartpole", ["--operators.prune-select.max-prune-fraction", "-0.5"], "max_prune_fraction"),
        ("eaudedqn-cartpole", ["--operators.prune-select.horizon", "1.5"], "operators.prune_select.horizon"),
        ("eaudedqn-cartpole", ["--learner.target", "online"], "operators.prune_select.kind"),
        ("polyprunedqn-cartpole", ["--operators.poly-prune.start", "0.8"], "operators.poly_prune.start"),
        (
            "polyprunedqn-cartpole",
            ["--operators.poly-prune.start", "0.6", "--operators.poly-prune.end", "0.3"],
            "operators.poly_prune.start",
        ),
        ("polyprunedqn-cartpole", ["--operators.poly-prune.final-sparsity", "1"], "final_sparsity"),
        ("polyprunedqn-cartpole", ["--operators.poly-prune.final-sparsity", "-0.1"], "final_sparsity"),
        ("polyprunedqn-cartpole", ["--operators.poly-prune.every", "0"], "operators.poly_prune.every"),
        ("eaudedqn-cartpole", ["--no-learner.masked"], "operators.prune_select.kind"),
        ("eaudedqn-cartpole", ["--learner.population", "3"], "operators.prune_select.kind"),
    ],
)
def test_bad_pruning_settings_are_one_line_errors(pipeline, overrides, key):
    with pytest.raises(ConfigError) as error:
        build_pipeline(*load_pipeline(pipeline, overrides)[:1])
    message = str(error.value)
    assert key in message and "\n" not in message


def test_pipeline_files_build_the_intended_stages():
    config, _, _ = load_pipeline("eaudedqn-cartpole")
    pipe = build_pipeline(config)
    assert config.algorithm == "eaudedqn" and pipe.learner.population == 4 and pipe.learner.masked
    (select,) = pipe.operators
    assert isinstance(select, PruneSelect) and select.period == config.operator("prune_select").period
    assert select.horizon_step == round(0.8 * config.run.total_steps)
    config, _, _ = load_pipeline("polyprunedqn-lunarlander")
    assert config.env.task_id == "LunarLander-v3" and config.operator("poly_prune").final_sparsity == 0.95
    for name in ("eaudedqn-lunarlander", "eaudedqn-atari", "polyprunedqn-atari"):
        load_pipeline(name)
    config, _, _ = load_pipeline("eaudedqn-atari", ["--network.dense-units", "32"])
    assert config.operator("prune_select").num_networks == 5 and config.network.kind == "nature_cnn"
    network = make_network_factory(config.network, (4, 84, 84), 1, 6)(jax.random.key(0))
    assert network.torso.dense.weight.shape[0] == 32
    quick, _, _ = load_pipeline("quickstart")
    assert quick.algorithm == "eaudedqn" and quick.env.task_id == "CartPole-v1"
    assert quick.operator("prune_select") is not None


@pytest.mark.parametrize("method", ["prune_select", "poly_prune"])
def test_tiny_runs_log_and_plot_sparsity(make_config, method):
    from sparseq.runs.runner import train

    operators, learner = {
        "prune_select": ([("prune_select", {"period": 25, "num_networks": 3})], {"population": 3, "masked": True}),
        "poly_prune": (
            [("poly_prune", {"start": 0.1, "end": 0.6, "final_sparsity": 0.5, "every": 20}), ("target_sync", {})],
            {"masked": True},
        ),
    }[method]
    config = make_config(run={"total_steps": 600, "log_every": 150}, operators=operators, learner=learner)
    result = train(config, name=f"{method}-tiny")  # the runner donates the state: no shared buffers
    records = [json.loads(line) for line in (result.folder / "metrics.jsonl").read_text().splitlines()]
    learned = [r for r in records if "sparsity/overall" in r]
    assert learned and "sparsity/torso.layers.0" in learned[-1]
    sparsity = [r["sparsity/overall"] for r in learned]
    assert sparsity == sorted(sparsity)
    assert (result.folder / "returns.png").exists()
    kinds = [type(op) for op in build_pipeline(config).operators]
    if method == "prune_select":
        assert kinds == [PruneSelect]
        assert all("population/selected" in r and "population/loss_sum_2" in r for r in learned)
        # Every target update is in selections.csv, not only the last of each log point.
        rows = np.genfromtxt(result.folder / "selections.csv", delimiter=",", names=True, ndmin=1)
        assert len(rows) == sum(r.get("operators/target_updated", 0) for r in records) > len(learned)
        assert rows.dtype.names[:4] == ("env_steps", "selected", "target_sparsity", "loss_sum_0")
        assert np.all(np.diff(rows["target_sparsity"]) >= 0) and np.all(rows["env_steps"] % 25 == 0)
    else:
        assert kinds == [PolyPrune, TargetSync]
        assert sparsity[-1] == pytest.approx(0.5, abs=0.01)


def test_selections_file_appends_every_selection_and_truncates_on_resume(tmp_path):
    from sparseq.runs.selections import append_selections, truncate_selections

    def chunk(first_step: int) -> dict[str, np.ndarray]:
        return {
            "steps": np.arange(first_step, first_step + 4) * 100,
            "target_updated": np.array([False, True, False, True]),
            "population/selected": np.array([0, 2, 2, 1]),
            "population/loss_sum": np.arange(12, dtype=np.float32).reshape(4, 3),
            "population/sparsity": np.tile(np.array([0.1, 0.2, 0.3], np.float32), (4, 1)),
            "sparsity/overall": np.array([0.0, 0.1, 0.1, 0.2], np.float32),
        }

    append_selections(tmp_path, {"steps": np.arange(3), "target_updated": np.ones(3, bool)})  # DQN: nothing
    assert not (tmp_path / "selections.csv").exists()
    append_selections(tmp_path, chunk(1))
    append_selections(tmp_path, chunk(5))
    rows = np.genfromtxt(tmp_path / "selections.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(rows["env_steps"], [200, 400, 600, 800])
    np.testing.assert_array_equal(rows["selected"], [2, 1, 2, 1])
    np.testing.assert_array_equal(rows["loss_sum_2"], [5, 11, 5, 11])
    truncate_selections(tmp_path, 500)
    rows = np.genfromtxt(tmp_path / "selections.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(rows["env_steps"], [200, 400])


def test_random_acting_member_draws_uniformly_and_only_with_its_probability():
    population = 4
    state = eqx.tree_at(lambda s: s.acting_member, learner(population).init(jax.random.key(0)), jnp.asarray(2))
    draw = jax.jit(jax.vmap(lambda key, p: learner(population).with_random_acting_member(state, key, p).acting_member))
    keys = jax.random.split(jax.random.key(3), 4000)
    always = np.asarray(draw(keys, jnp.ones(4000)))
    counts = np.bincount(always, minlength=population)
    assert np.all(np.abs(counts / 4000 - 1 / population) < 0.03)
    assert np.all(np.asarray(draw(keys, jnp.zeros(4000))) == 2)
    sometimes = np.asarray(draw(keys, jnp.full(4000, 0.2)))
    # With probability 0.2 a uniform draw, which lands on member 2 a quarter of the time.
    assert abs(np.mean(sometimes != 2) - 0.2 * 3 / 4) < 0.03


def test_member_exploration_schedule_reaches_the_collector_only_when_enabled(make_config):
    base = [("prune_select", {"num_networks": 3})]
    population = {"population": 3, "masked": True}
    schedule = {"member_start": 1.0, "member_end": 0.1, "member_decay_steps": 100}
    config = make_config(operators=base, exploration=schedule, learner=population)
    pipe = build_pipeline(config)
    assert pipe.exploration.explores_members
    start = pipe.learning_starts
    schedule = [float(pipe.exploration.member_epsilon(jnp.asarray(t), start)) for t in (0, start + 50, start + 500)]
    assert schedule == pytest.approx([1.0, 0.55, 0.1])
    _, metrics = pipe.collect(pipe.init(jax.random.key(0)))
    assert float(metrics["member_epsilon"]) == 1.0
    plain = build_pipeline(make_config(operators=base, learner=population))
    assert not plain.exploration.explores_members
    assert "member_epsilon" not in plain.collect(plain.init(jax.random.key(0)))[1]
    with pytest.raises(ConfigError, match=r"exploration\.member_start"):
        load_pipeline("eaudedqn-cartpole", ["--exploration.member-start", "1.5"])


def test_random_prune_amounts_are_in_range_and_follow_the_loss_sums():
    from sparseq.stages.operators.prune_select import random_prune_fractions

    draw = jax.jit(lambda losses: random_prune_fractions(5, 0.2, losses))
    a = np.asarray(draw(jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])))
    assert a[0] == 0 and np.all((a[1:] >= 0) & (a[1:] < 0.2)) and len(set(a[1:].tolist())) == 4
    np.testing.assert_array_equal(a, draw(jnp.array([1.0, 2.0, 3.0, 4.0, 5.0])))  # deterministic
    assert not np.array_equal(a, draw(jnp.array([1.0, 2.0, 3.0, 4.0, 5.5])))  # another period, another draw
    state = with_loss_sums(distinct_sparse_state(4, [0.0, 0.0, 0.0, 0.0]), [3.0, 1.0, 2.0, 4.0])
    op = operator(prune_amounts="random", max_prune_fraction=0.5)
    op_state, _, _ = jitted(op)(op.init(state), state, jnp.asarray(9), jnp.asarray(10))
    sparsity = np.asarray(op_state.member_sparsity)
    assert sparsity[0] == pytest.approx(float(sparsity_stats(select_member(state.masks, 1))["overall"]))
    assert np.all(sparsity[1:] < 0.5 + 1e-3)


def test_paper_preset_has_the_released_values():
    config, _, _ = load_pipeline("eaudeqn-paper")
    select = config.operator("prune_select").options
    assert (select.num_networks, select.max_prune_fraction, select.optimizer_state, select.period) == (
        5,
        0.01,
        "reset",
        8_000,
    )
    assert config.learner.options.population == 5 and config.network.kind == "nature_cnn"
