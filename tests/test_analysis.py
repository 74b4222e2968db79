"""Network analyses: srank, dormant neurons, churn, per-layer weights against hand-computed
values; the [analysis] section in runs (training unchanged, plot, errors); `sparseq analyze`."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.analysis import (
    dormant_fraction,
    dormant_scores,
    greedy_actions,
    layer_weight_norms,
    layer_zero_fractions,
    policy_churn,
    srank,
    unit_activations,
)
from sparseq.analysis.network import analyze_network
from sparseq.pipeline.config import ConfigError, load_pipeline
from sparseq.pipeline.config.build import build_pipeline
from sparseq.stages.networks import MLPTorso, QNetwork

# ---------------------------------------------------------------- the measures


def test_srank_counts_singular_values_up_to_one_minus_delta_of_their_sum():
    # Singular values 3, 1, 0 (sum 4): 1 - delta = 0.99 needs 3.96 -> both nonzero ones;
    # delta = 0.3 needs 2.8 -> the first alone; delta = 0.25 needs exactly 3 -> the first.
    features = jnp.diag(jnp.array([3.0, 1.0, 0.0]))
    assert int(srank(features, 0.01)) == 2
    assert int(srank(features, 0.3)) == 1
    assert int(srank(features, 0.25)) == 1
    assert int(srank(jnp.zeros((4, 3)), 0.01)) == 0
    # Rank-2 features in 5 dimensions (a 2-dimensional subspace, rotated): srank 2.
    basis = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (5, 5)))[0][:, :2]
    coefficients = jax.random.normal(jax.random.key(1), (64, 2)) * jnp.array([2.0, 1.0])
    assert int(srank(coefficients @ basis.T, 0.01)) == 2
    # Rows repeated do not add rank; singular values sum the same per direction.
    assert int(srank(jnp.tile(features, (3, 1)), 0.01)) == 2


def test_dormant_scores_normalise_by_the_layer_mean():
    # Per-unit mean |activation|: (0, 2, 2, 0.1); layer mean 4.1 / 4 = 1.025.
    activations = jnp.array([[0.0, 2.0, 4.0, 0.2], [0.0, -2.0, 0.0, 0.0]])
    scores = np.asarray(dormant_scores(activations))
    np.testing.assert_allclose(scores, np.array([0.0, 2.0, 2.0, 0.1]) / 1.025, rtol=1e-6)
    assert float(dormant_fraction(activations, 0.0)) == 0.25  # dead: unit 0 only
    assert float(dormant_fraction(activations, 0.1)) == 0.5  # 0.1 / 1.025 = 0.098 <= 0.1
    assert float(dormant_fraction(activations, 0.05)) == 0.25
    assert float(dormant_fraction(jnp.zeros((3, 5)), 0.0)) == 1.0  # a silent layer is all dormant


def test_conv_units_are_channels_averaged_over_positions():
    activations = jnp.zeros((2, 3, 2, 2)).at[:, 1].set(1.0).at[0, 2, 0, 0].set(8.0)  # (B, C, H, W)
    units = np.asarray(unit_activations(activations))
    np.testing.assert_allclose(units, [[0.0, 1.0, 2.0], [0.0, 1.0, 0.0]])
    assert unit_activations(jnp.ones((4, 7))).shape == (4, 7)


def _linear_q(weight, bias, heads: int, actions: int) -> QNetwork:
    network = QNetwork(MLPTorso(2, (), key=jax.random.key(0)), heads, actions, "lecun_normal", key=jax.random.key(1))
    return eqx.tree_at(
        lambda n: (n.head.linear.weight, n.head.linear.bias),
        network,
        (jnp.asarray(weight, jnp.float32), jnp.asarray(bias, jnp.float32)),
    )


def test_greedy_actions_and_churn():
    # One head: Q(s) = W s; W rows are actions. s = (1, 0) -> action 0, s = (0, 1) -> action 1.
    one_head = _linear_q([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], heads=1, actions=2)
    obs = jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    np.testing.assert_array_equal(greedy_actions(one_head, obs), [0, 1, 0])
    # Three heads (h0 is the target): the policy is the mean of heads 1 and 2, never head 0.
    weight = [[0.0, 9.0], [9.0, 0.0], [1.0, 0.0], [0.0, 0.5], [1.0, 0.0], [0.0, 2.0]]
    iterated = _linear_q(weight, np.zeros(6), heads=3, actions=2)
    # s = (1, 1): head 0 prefers action 0 (9 vs 0)... mean of heads 1, 2: (1, 1.25) -> action 1.
    np.testing.assert_array_equal(greedy_actions(iterated, jnp.array([[1.0, 1.0]])), [1])
    assert float(policy_churn(jnp.array([0, 1, 1, 0]), jnp.array([0, 0, 1, 1]))) == 0.5


def test_per_layer_zero_fractions_and_norms():
    network = QNetwork(MLPTorso(3, (4,), key=jax.random.key(0)), 1, 2, "lecun_normal", key=jax.random.key(1))
    network = eqx.tree_at(lambda n: n.torso.layers[0].weight, network, jnp.ones((4, 3)).at[0].set(0.0))
    network = eqx.tree_at(lambda n: n.head.linear.weight, network, jnp.full((2, 4), 0.5))
    zeros = {k: float(v) for k, v in layer_zero_fractions(network).items()}
    assert zeros == pytest.approx({"overall": 3 / 20, "torso.layers.0": 0.25, "head.linear": 0.0})
    norms = {k: float(v) for k, v in layer_weight_norms(network).items()}
    assert norms == pytest.approx({"torso.layers.0": 3.0, "head.linear": 0.5 * np.sqrt(8)})


def test_analyze_network_reports_every_layer():
    network = QNetwork(MLPTorso(4, (8, 6), key=jax.random.key(0)), 2, 3, "lecun_normal", key=jax.random.key(1))
    obs = jax.random.normal(jax.random.key(2), (32, 4))
    out = analyze_network(network, obs, ["srank", "dormant", "sparsity", "weight_norm"], delta=0.01, tau=0.0)
    assert 1 <= int(out["analysis/srank"]) <= 6
    layers = ("torso.layers.0", "torso.layers.1")
    assert {f"analysis/dormant/{name}" for name in layers} <= out.keys()
    features = jax.vmap(network.torso)(obs)
    assert int(out["analysis/srank"]) == int(srank(features, 0.01))
    dead = float(jnp.mean(jnp.all(features == 0, axis=0)))
    assert float(out["analysis/dormant/torso.layers.1"]) == pytest.approx(dead)
    assert {"analysis/sparsity/overall", "analysis/weight_norm/head.linear"} <= out.keys()
    only = analyze_network(network, obs, ["weight_norm"])
    assert all(k.startswith("analysis/weight_norm/") for k in only)


# ---------------------------------------------------------------- in runs

ANALYSIS = {"every": 300, "states": 64, "churn_period": 50}


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_analysis_does_not_change_training_and_logs_and_plots(make_config):
    """Identical metrics and episodes with and without [analysis] (apart from its keys),
    on EauDeDQN (a population with masks, selections every 25 steps)."""
    from sparseq.runs.runner import train

    sections = {
        "run": {"total_steps": 600, "log_every": 100},
        "learner": {"population": 3, "masked": True},
        "operators": [("prune_select", {"period": 25, "num_networks": 3})],
    }
    plain = train(make_config(**sections), name="plain")
    analysed = train(make_config(**sections, analysis=ANALYSIS), name="analysed")
    a, b = _records(plain.folder), _records(analysed.folder)
    assert [{k: v for k, v in r.items() if not k.startswith("analysis/")} for r in b] == a
    assert (plain.folder / "episodes.csv").read_text() == (analysed.folder / "episodes.csv").read_text()
    with_analysis = [r for r in b if "analysis/srank" in r]
    assert [r["env_steps"] for r in with_analysis] == [300, 600]
    assert all(r["analysis/churn_steps"] == 50 and 0 <= r["analysis/churn"] <= 1 for r in with_analysis)
    assert all(r["analysis/sparsity/overall"] == pytest.approx(r["sparsity/overall"]) for r in with_analysis)
    assert (analysed.folder / "analysis.png").stat().st_size > 0
    assert not (plain.folder / "analysis.png").exists()


@pytest.mark.parametrize(
    ("pipeline", "overrides", "key", "text"),
    [
        ("dqn-cartpole", ["--analysis.every=5000", "--analysis.metrics", "srank", "rank"], "analysis.metrics", "rank"),
        ("dqn-cartpole", ["--analysis.every", "7000"], "analysis.every", "multiple of run.log_every"),
        ("sac-hopper", ["--analysis.every", "10000"], "analysis.every", "Q-network"),
        ("dqn-cartpole", ["--analysis.every", "5000", "--analysis.churn-period", "5000"], "churn_period", "below"),
    ],
)
def test_bad_analysis_settings_are_one_line_errors(pipeline, overrides, key, text):
    with pytest.raises(ConfigError) as error:
        config, sources, _ = load_pipeline(pipeline, overrides)
        build_pipeline(config, source_of=lambda k: sources.get(k, "pipeline"))
    message = str(error.value)
    assert key in message and text in message and "\n" not in message


def test_analysis_of_a_network_without_hidden_layers_is_a_one_line_error(make_config):
    config = make_config(network={"hidden": ()}, analysis={"every": 100})
    with pytest.raises(ConfigError) as error:
        build_pipeline(config)
    assert "analysis.every" in str(error.value) and "no hidden layer" in str(error.value)


def test_analyze_command_reads_a_finished_runs_checkpoints(tmp_path, make_config, run_cli):
    from sparseq.runs.runner import train

    config = make_config(run={"total_steps": 1000, "log_every": 250, "checkpoint_every": 500})
    folder = train(config, name="run").folder
    analyzed = run_cli("analyze", str(folder), "--states", "64")
    assert analyzed.returncode == 0, analyzed.stderr[-2000:]
    rows = [json.loads(line) for line in (folder / "analysis" / "checkpoints.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [500, 1000]
    assert all(1 <= r["analysis/srank"] <= 16 for r in rows)
    assert "analysis/churn" not in rows[0] and 0 <= rows[1]["analysis/churn"] <= 1
    assert rows[1]["analysis/churn_steps"] == 500
    assert (folder / "analysis" / "checkpoints.png").exists()
    assert "srank" in analyzed.stdout
    missing = run_cli("analyze", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
