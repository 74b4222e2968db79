"""`sparseq export` / `sparseq.outputs.policy`: the sparse policy computes what the masked
network computes, without the training code."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

from sparseq.cli import main as cli_main
from sparseq.outputs.export import (
    MASKS_FILE,
    build_manifest,
    export_run,
    index_dtype,
    load_final_policy,
    save_final_policy,
    to_csr,
    write_export,
)
from sparseq.outputs.policy import load_policy
from sparseq.pipeline.config.dump import to_toml
from sparseq.pipeline.config.schema import NetworkConfig, PipelineConfig
from sparseq.stages.learners.population import stack_members
from sparseq.stages.networks import MLPTorso, NatureCNNTorso, QNetwork
from sparseq.stages.sparsity import apply_masks, init_masks

# Networks are built and run under jit: op-by-op JAX compiles every primitive, which
# makes a test 10x slower on a busy CPU.
forward = eqx.filter_jit(lambda network, obs: jax.vmap(network)(obs))


def random_masks(network, sparsity: float, seed: int):
    """Masks (numpy bool) keeping a random (1 - sparsity) of every weight."""
    leaves, treedef = jax.tree.flatten(eqx.filter_eval_shape(init_masks, network))
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [rng.random(m.shape) >= sparsity for m in leaves])


@eqx.filter_jit
def mlp(heads: int = 1, layer_norm: bool = False, seed: int = 0) -> QNetwork:
    torso_key, head_key = jax.random.split(jax.random.key(seed))
    torso = MLPTorso(6, (64, 32), layer_norm=layer_norm, key=torso_key)
    return QNetwork(torso, heads, 3, "lecun_normal", key=head_key)


@eqx.filter_jit
def randomise_norms(network):
    """Non-trivial LayerNorm scales/offsets, so the test sees them."""

    def perturb(x):
        return x + 0.3 * jax.random.normal(jax.random.key(x.size), x.shape) if x.ndim == 1 else x

    return jax.tree.map(lambda x: perturb(x) if eqx.is_array(x) else x, network)


masked = eqx.filter_jit(apply_masks)


def export_and_load(tmp_path: Path, network, obs_shape, obs_dtype="float32", layout="auto"):
    manifest, arrays = build_manifest(network, obs_shape=obs_shape, obs_dtype=obs_dtype, num_actions=3, layout=layout)
    write_export(tmp_path / "export", manifest, arrays)
    return load_policy(tmp_path / "export"), manifest


def test_csr_helpers():
    matrix = np.array([[0, 1.5, 0], [0, 0, 0], [2.0, 0, -3.0]], np.float32)
    data, indices, indptr = to_csr(matrix)
    rebuilt = scipy.sparse.csr_matrix((data, indices.astype(np.int32), indptr.astype(np.int32)), shape=(3, 3))
    np.testing.assert_array_equal(rebuilt.toarray(), matrix)
    assert indices.dtype == np.uint8 and indptr.dtype == np.uint32
    assert index_dtype(256) == np.uint8 and index_dtype(257) == np.uint16 and index_dtype(3136) == np.uint16


@pytest.mark.parametrize("heads,layer_norm", [(1, False), (3, True)])
def test_mlp_round_trip(tmp_path, heads, layer_norm):
    network = randomise_norms(mlp(heads, layer_norm))
    masks = random_masks(network, 0.95, seed=1)
    network = masked(network, masks)
    policy, manifest = export_and_load(tmp_path, network, (6,))
    obs = np.random.default_rng(0).normal(size=(17, 6)).astype(np.float32)
    expected = np.asarray(forward(network, obs))  # (B, H, A)
    np.testing.assert_allclose(policy.q_values(obs), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(policy.q_values(obs[:1]), expected[:1], rtol=1e-5, atol=1e-5)
    if heads == 1:
        np.testing.assert_array_equal(policy.act(obs), expected[:, 0].argmax(-1))
    else:
        assert manifest["acting_heads"] == [1, 2]
        actions = policy.act(obs, rng=np.random.default_rng(0))
        assert all(a in expected[i, 1:].argmax(-1) for i, a in enumerate(actions))
    kept = [int(m.sum()) for m in jax.tree.leaves(masks)]
    layers = [e for e in manifest["layers"] if "nonzeros" in e]
    assert [e["nonzeros"] for e in layers] == kept
    for entry in layers:
        assert entry["format"] == "csr" and entry["stored_bytes"] < entry["dense_bytes"]
    assert manifest["totals"]["sparsity"] == pytest.approx(1 - sum(kept) / sum(e["size"] for e in layers))


def test_dense_layers_stay_dense_in_auto_layout(tmp_path):
    _, manifest = export_and_load(tmp_path, mlp(), (6,))
    assert {e["format"] for e in manifest["layers"]} == {"dense"}
    assert manifest["totals"]["stored_bytes"] == manifest["totals"]["dense_bytes"]


def test_nature_cnn_round_trip(tmp_path):
    @eqx.filter_jit
    def make(key):
        torso_key, head_key = jax.random.split(key)
        # 44x44 frames: the same strides as 84x84 with a 2x2 final map (flatten order matters).
        torso = NatureCNNTorso((4, 44, 44), dense_units=64, layer_norm=True, key=torso_key)
        return randomise_norms(QNetwork(torso, 1, 3, "xavier_uniform", key=head_key))

    network = make(jax.random.key(3))
    network = masked(network, random_masks(network, 0.9, seed=2))
    policy, manifest = export_and_load(tmp_path, network, (4, 44, 44), "uint8")
    obs = np.random.default_rng(1).integers(0, 256, size=(3, 4, 44, 44), dtype=np.uint8)
    expected = np.asarray(forward(network, obs))
    np.testing.assert_allclose(policy.q_values(obs), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(policy.act(obs), expected[:, 0].argmax(-1))
    assert [e["kind"] for e in manifest["layers"]] == ["conv2d"] * 3 + ["flatten", "linear", "linear"]
    assert manifest["layers"][0]["stride"] == [4, 4]
    # A dense load of the same files gives the same values (the benchmark's baseline).
    dense = load_policy(tmp_path / "export", sparse=False)
    np.testing.assert_allclose(dense.q_values(obs), expected, rtol=1e-4, atol=1e-4)


def make_run_folder(tmp_path: Path, network_config: NetworkConfig) -> tuple[Path, QNetwork]:
    """A finished run folder: pipeline.toml plus the runner's final-policy files, from a
    population of 2 members where member 1 acts (EauDeQN's target-selected network)."""
    folder = tmp_path / "run"
    folder.mkdir()
    config = PipelineConfig(network=network_config)
    (folder / "pipeline.toml").write_text(to_toml(config))
    from sparseq.pipeline.config.build import make_network_factory

    make = make_network_factory(config.network, (4,), 1, 2)
    online = eqx.filter_jit(stack_members)(make, jax.random.split(jax.random.key(5), 2))
    members = [jax.tree.map(lambda x, i=i: x[i] if eqx.is_array(x) else x, online) for i in range(2)]
    member_masks = [random_masks(m, 0.9, seed=7 + i) for i, m in enumerate(members)]
    masks = jax.tree.map(lambda *xs: np.stack(xs), *member_masks)
    online = eqx.filter_jit(eqx.filter_vmap(apply_masks))(online, masks)
    learner = SimpleNamespace(online=online, masks=masks, acting_member=jnp.asarray(1))
    save_final_policy(folder, learner, (4,), 2)
    acting = masked(members[1], member_masks[1])
    return folder, acting


def test_run_folder_export_round_trip(tmp_path):
    folder, acting = make_run_folder(tmp_path, NetworkConfig(hidden=(32, 32)))
    assert (folder / MASKS_FILE).exists()
    final = load_final_policy(folder)
    obs = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
    expected = np.asarray(forward(acting, obs))
    np.testing.assert_allclose(np.asarray(forward(final.network, obs)), expected, atol=1e-6)
    assert cli_main(["export", str(folder), "--out", str(tmp_path / "exp")]) == 0
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["task_id"] == "CartPole-v1" and manifest["acting_member"] == 1
    np.testing.assert_allclose(load_policy(tmp_path / "exp").q_values(obs), expected, rtol=1e-5, atol=1e-5)


def test_exported_policy_runs_without_training_code(tmp_path):
    folder, acting = make_run_folder(tmp_path, NetworkConfig(hidden=(16,)))
    out, _ = export_run(folder)
    obs = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    np.save(tmp_path / "obs.npy", obs)
    script = f"""
import sys, numpy as np
from sparseq.outputs.policy import load_policy
values = load_policy({str(out)!r}).q_values(np.load({str(tmp_path / "obs.npy")!r}))
np.save({str(tmp_path / "values.npy")!r}, values)
banned = ("jax", "equinox", "optax", "envpool", "sparseq.pipeline.config", "sparseq.runs.runner", "sparseq.pipeline",
          "sparseq.stages.learners", "sparseq.stages.networks", "sparseq.outputs.export")
loaded = [m for m in sys.modules if m.split(".")[0] in banned or m.startswith(banned)]
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=120)
    expected = np.asarray(forward(acting, obs))
    np.testing.assert_allclose(np.load(tmp_path / "values.npy"), expected, rtol=1e-5, atol=1e-5)


def test_evaluate_run_and_export_agree(tmp_path, capsys):
    """Greedy CartPole episodes: the JAX network and the exported policy play the same."""
    from sparseq.outputs.evaluate import main as evaluate_main

    folder, _ = make_run_folder(tmp_path, NetworkConfig(hidden=(16,)))
    export_run(folder)
    assert evaluate_main([str(folder), "--episodes", "4", "--seed", "3"]) == 0
    from_run = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert evaluate_main([str(folder / "export"), "--episodes", "4", "--seed", "3"]) == 0
    from_export = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert from_run.pop("source") != from_export.pop("source")
    assert from_run == from_export and from_run["episodes"] == 4


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run folder" in err
    folder = tmp_path / "unfinished"
    folder.mkdir()
    (folder / "pipeline.toml").write_text(to_toml(PipelineConfig()))
    assert cli_main(["export", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no final policy" in err
    assert cli_main(["evaluate", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli_main(["evaluate", str(folder), "--episodes", "0"]) == 2
    assert "--episodes" in capsys.readouterr().err
    (folder / "policy.eqx").write_bytes(b"not a policy")
    (folder / "policy.json").write_text(json.dumps({"obs_shape": [4], "num_actions": 2, "num_heads": 1}))
    assert cli_main(["export", str(folder)]) == 2
    assert "unreadable" in capsys.readouterr().err
