"""Final policy of a continuous-control (SAC) run: the runner saves the actor, `sparseq
export` writes it with a manifest that says so, the numpy loader acts exactly like
`SACLearner.act_deterministic`, and `sparseq evaluate [--video]` plays it.

One tiny SAC run on InvertedPendulum-v5 (module fixture, mostly compilation) serves
every test; the CartPole run folder is written directly, without training.
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import equinox as eqx
import imageio_ffmpeg
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.cli import main as cli_main
from sparseq.outputs import video
from sparseq.outputs.export import MASKS_FILE, export_run, load_final_policy, save_final_actor, save_final_policy
from sparseq.outputs.policy import PolicyError, load_policy

TASK = "InvertedPendulum-v5"  # obs (4,), one action in [-3, 3]


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory):
    from sparseq.pipeline.config.build import build_pipeline
    from sparseq.pipeline.config.loader import load_pipeline
    from sparseq.runs.runner import train

    root = tmp_path_factory.mktemp("sac")
    overrides = [
        *("--env.task-id", TASK, "--run.total-steps", "1500", "--learner.warmup", "500", "--run.log-every", "500"),
        *("--network.hidden", "32", "32", "--learner.actor-hidden", "32", "32"),
        *("--replay.batch-size", "32", "--replay.capacity", "2000", "--eval.every", "0"),
        *("--run.out-dir", str(root / "runs"), "--run.checkpoint-dir", str(root / "checkpoints")),
        *("--run.wandb.mode", "disabled", "--no-run.progress"),
    ]
    config, _, _ = load_pipeline("sac-halfcheetah", overrides)
    pipeline = build_pipeline(config)
    result = train(config, pipeline=pipeline)
    return SimpleNamespace(folder=result.folder, learner=pipeline.learner, state=result.state.learner)


def observations(n: int, seed: int) -> np.ndarray:
    return (2.0 * np.random.default_rng(seed).normal(size=(n, 4))).astype(np.float32)


def deterministic(learner, state, obs: np.ndarray) -> np.ndarray:
    return np.asarray(eqx.filter_jit(learner.act_deterministic)(state, jnp.asarray(obs)))


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_sac_run_saves_the_actor_and_exports_it(sac_run, tmp_path, capsys):
    meta = json.loads((sac_run.folder / "policy.json").read_text())
    assert meta["policy"] == "squashed_gaussian_actor" and meta["network"] == "actor"
    assert (meta["obs_shape"], meta["action_dim"], meta["hidden"]) == ([4], 1, [32, 32])
    assert not (sac_run.folder / MASKS_FILE).exists()

    assert cli_main(["export", str(sac_run.folder), "--out", str(tmp_path / "exp")]) == 0
    assert "squashed Gaussian actor" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["policy"] == "squashed_gaussian_actor" and manifest["network"] == "actor"
    assert manifest["task_id"] == TASK and manifest["algorithm"] == "sac"
    assert (manifest["action_dim"], manifest["action_low"], manifest["action_high"]) == (1, [-3.0], [3.0])
    assert manifest["obs_keys"] == [] and manifest["outputs"] == ["mean", "log_std"]
    assert not {"num_actions", "num_heads", "acting_heads"} & manifest.keys()  # not a Q-network
    assert [e["name"] for e in manifest["layers"]] == ["torso.layers[0]", "torso.layers[1]", "out"]
    assert manifest["layers"][-1]["shape"] == [2, 32]  # means and log stds

    obs = observations(33, seed=0)
    expected = deterministic(sac_run.learner, sac_run.state, obs)
    policy = load_policy(tmp_path / "exp")
    actions = policy.act(obs)
    assert policy.continuous and actions.shape == (33, 1) and actions.dtype == np.float32
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    assert np.all(np.abs(actions) <= 3.0)
    with pytest.raises(PolicyError, match="not a Q-network"):
        policy.q_values(obs)
    # The JAX side of the same files: load_final_policy rebuilds the actor.
    final = load_final_policy(sac_run.folder)
    mean, _ = eqx.filter_jit(lambda a, o: a.batched(o))(final.network, jnp.asarray(obs))
    np.testing.assert_allclose(policy.distribution(obs)[0], np.asarray(mean), atol=1e-5)


def test_masked_actor_exports_as_csr(sac_run, tmp_path):
    """A pruned actor (actor_masked): masks applied at save time, CSR layers, same actions."""
    actor = sac_run.state.actor
    rng = np.random.default_rng(4)

    def random_mask(leaf):
        return None if leaf is None else jnp.asarray(rng.random(leaf.shape) >= 0.8)

    from sparseq.stages.sparsity import apply_masks, init_masks

    masks = jax.tree.map(random_mask, init_masks(actor.online), is_leaf=lambda x: x is None)
    # Online weights left dense: the saved actor has its masks applied all the same.
    with_masks = eqx.tree_at(lambda s: s.masks, actor, masks, is_leaf=lambda x: x is None)
    pruned = eqx.tree_at(lambda s: s.online, with_masks, apply_masks(actor.online, masks))
    state = eqx.tree_at(lambda s: s.actor, sac_run.state, pruned)
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(sac_run.folder / "pipeline.toml", folder / "pipeline.toml")
    save_final_actor(folder, with_masks, obs_shape=(4,), action_low=(-3.0,), action_high=(3.0,))
    assert (folder / MASKS_FILE).exists() and json.loads((folder / "policy.json").read_text())["masked"]
    out, manifest = export_run(folder, layout="auto")
    weighted = [e for e in manifest["layers"] if "nonzeros" in e]
    assert {e["format"] for e in weighted} == {"csr"} and manifest["totals"]["sparsity"] > 0.7
    obs = observations(17, seed=1)
    expected = deterministic(sac_run.learner, state, obs)
    np.testing.assert_allclose(load_policy(out).act(obs), expected, atol=1e-5)
    np.testing.assert_allclose(load_policy(out, sparse=False).act(obs), expected, atol=1e-5)


def test_evaluate_sac_run_and_export_agree(sac_run, capsys):
    export_run(sac_run.folder)
    assert cli_main(["evaluate", str(sac_run.folder), "--episodes", "3", "--seed", "5"]) == 0
    from_run = last_json(capsys.readouterr().out)
    assert cli_main(["evaluate", str(sac_run.folder / "export"), "--episodes", "3", "--seed", "5"]) == 0
    from_export = last_json(capsys.readouterr().out)
    assert from_run.pop("source") != from_export.pop("source")
    assert from_run == from_export
    assert from_run["task_id"] == TASK and from_run["episodes"] == 3 and from_run["epsilon"] == 0.0
    assert from_run["length_mean"] >= 1 and "video" not in from_run


def test_evaluate_video_writes_a_decodable_mp4(sac_run, capsys):
    export_run(sac_run.folder)
    args = ["evaluate", str(sac_run.folder / "export"), "--episodes", "1", "--video", "--video-steps", "4"]
    assert cli_main(args) == 0
    summary = last_json(capsys.readouterr().out)
    path = Path(summary["video"])
    assert path == sac_run.folder / "videos" / "evaluate.mp4" and path.stat().st_size > 0
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = sum(1 for _ in reader)
    assert frames == summary["video_frames"] and 1 <= frames <= 4
    assert tuple(meta["size"]) == video.DEFAULT_SIZE


def test_evaluate_video_without_gl_warns_and_still_evaluates(sac_run, tmp_path, monkeypatch, capsys):
    def no_gl(width, height):
        raise video.VideoUnavailable("no OpenGL backend for MuJoCo rendering (MUJOCO_GL=egl): test")

    monkeypatch.setattr(video, "_ensure_gl_context", no_gl)
    out = tmp_path / "v.mp4"
    args = ["evaluate", str(sac_run.folder), "--episodes", "1", "--video", "--video-out", str(out)]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "warning" in captured.err and "OpenGL" in captured.err
    summary = last_json(captured.out)
    assert summary["episodes"] == 1 and "video" not in summary and not out.exists()


def test_evaluate_video_on_cartpole_is_one_line_exit_2(tmp_path, capsys):
    from sparseq.pipeline.config.build import make_network_factory
    from sparseq.pipeline.config.dump import to_toml
    from sparseq.pipeline.config.schema import NetworkConfig, PipelineConfig
    from sparseq.stages.learners.population import stack_members

    folder = tmp_path / "cartpole"
    folder.mkdir()
    config = PipelineConfig(network=NetworkConfig(hidden=(8,)))
    (folder / "pipeline.toml").write_text(to_toml(config))
    online = eqx.filter_jit(stack_members)(make_network_factory(config.network, (4,), 1, 2), jax.random.key(0)[None])
    save_final_policy(folder, SimpleNamespace(online=online, masks=None, acting_member=jnp.asarray(0)), (4,), 2)
    assert cli_main(["evaluate", str(folder), "--video"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "CartPole-v1" in captured.err and "Traceback" not in captured.err
    assert captured.out == "" and not (folder / "videos").exists()
