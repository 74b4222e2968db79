"""Pipeline files: the shipped pipelines load and build, `extends` chains and presets
merge in the documented order, overrides parse, the resolved file round-trips, and
every kind of bad input is a one-line ConfigError naming file, key path and value."""

import dataclasses
import tomllib
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.pipeline.config import ConfigError, PipelineConfig, load_pipeline
from sparseq.pipeline.config.build import build_pipeline
from sparseq.pipeline.config.dump import to_toml
from sparseq.pipeline.config.loader import parse_overrides
from sparseq.stages.collect.options import env_options
from sparseq.stages.operators import TargetSync

REPO = Path(__file__).resolve().parents[1]
REQUIRED_PIPELINES = [
    "quickstart",
    "dqn-cartpole",
    "tfdqn-cartpole",
    "dqn-lunarlander",
    "tfdqn-lunarlander",
    "dqn-atari",
]


@pytest.fixture(autouse=True)
def in_tmp_folder(tmp_path, monkeypatch):
    """Pipeline names resolve against the repository; bad files live in tmp_path."""
    monkeypatch.setenv("SPARSEQ_HOME", str(REPO))
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_error(*args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        load_pipeline(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message, message
    return error.value


@pytest.mark.parametrize("name", REQUIRED_PIPELINES)
def test_required_pipelines_load_and_round_trip(name, tmp_path):
    config, _, path = load_pipeline(name)
    assert path == REPO / "pipelines" / f"{name}.toml"
    # The resolved file written into run folders loads back to the same configuration.
    resolved = write(tmp_path / "resolved.toml", to_toml(config))
    data = tomllib.loads(resolved.read_text())
    assert "extends" not in data and "preset" not in data["env"]
    assert load_pipeline(resolved)[0] == config


def test_every_shipped_pipeline_loads():
    names = sorted(p.stem for p in (REPO / "pipelines").glob("*.toml"))
    assert set(REQUIRED_PIPELINES) <= set(names)
    for name in names:
        # Offline pipelines name their dataset on the command line (loading reads no file).
        flags = ["--dataset.path=runs/some-run/dataset"] if name.startswith("offline-") else []
        config = load_pipeline(name, flags)[0]
        assert isinstance(config, PipelineConfig) and config.dataset.is_offline == bool(flags), name


def test_dqn_and_tfdqn_cartpole_settings():
    dqn = load_pipeline("dqn-cartpole")[0]
    assert (dqn.env.task_id, dqn.learner.target, dqn.network.hidden) == ("CartPole-v1", "network", (100, 100))
    assert [op.kind for op in dqn.operators] == ["target_sync"] and dqn.operator("target_sync").period == 200
    tfdqn = load_pipeline("tfdqn-cartpole")[0]
    assert tfdqn.learner.target == "online" and tfdqn.operators == ()
    # everything else is inherited from dqn-cartpole through `extends`
    assert dataclasses.replace(tfdqn, algorithm="dqn", learner=dqn.learner, operators=dqn.operators) == dqn


def test_extends_chain_and_preset():
    lunar = load_pipeline("tfdqn-lunarlander")[0]  # -> dqn-lunarlander -> dqn-cartpole
    assert lunar.env.task_id == "LunarLander-v3" and lunar.run.total_steps == 200_000
    assert lunar.learner.target == "online" and lunar.replay.capacity == 10_000
    atari = load_pipeline("dqn-atari")[0]  # envs/atari.toml preset
    assert atari.env.task_id == "Pong-v5" and atari.network.kind == "nature_cnn"
    assert atari.env.max_episode_steps == 27_000 and atari.env.reward_clip == 1.0
    assert atari.env.atari.repeat_action_probability == 0.25 and not atari.env.atari.episodic_life
    options = dict(env_options(atari.env))
    assert options["repeat_action_probability"] == 0.25 and options["reward_clip"] is False
    assert "repeat_action_probability" not in dict(env_options(lunar.env))


def test_precedence_preset_then_base_then_file_then_flags(tmp_path):
    write(tmp_path / "base.toml", '[env]\npreset = "classic"\nnum_envs = 2\n[replay]\nbatch_size = 16\n')
    write(tmp_path / "child.toml", 'extends = "base"\n[replay]\nbatch_size = 24\ncapacity = 500\n')
    config, sources, _ = load_pipeline(tmp_path / "child.toml", ["--replay.capacity", "600"])
    assert config.env.num_envs == 2  # base file over the preset (num_envs = 1)
    assert config.replay.batch_size == 24  # file over its base
    assert config.replay.capacity == 600  # flags over the file
    assert sources["env.num_envs"] == "base.toml" and sources["replay.capacity"] == "command line"
    assert sources["env.mode"] == "envs/classic.toml" or sources["env.mode"].endswith("envs/classic.toml")


def test_overrides_parse_lists_booleans_and_equals_forms():
    config = load_pipeline(
        "dqn-cartpole",
        ["--network.hidden", "64", "32", "--learner.n-step=3", "--network.layer-norm", "--no-run.progress"],
    )[0]
    assert config.network.hidden == (64, 32) and config.learner.n_step == 3
    assert config.network.layer_norm is True and config.run.progress is False
    config = load_pipeline("dqn-cartpole", ["--run.no-progress", "--network.hidden=8,8", "--learner.gamma", "1"])[0]
    assert config.run.progress is False and config.network.hidden == (8, 8) and config.learner.gamma == 1.0
    assert parse_overrides(["--exploration.end", "-0.5"]) == [("exploration.end", "-0.5", "command line")]


def test_build_pipeline_maps_the_config_onto_stages():
    dqn = build_pipeline(load_pipeline("dqn-cartpole", ["--replay.batch-size", "8"])[0])
    assert dqn.collector.task_id == "CartPole-v1" and dqn.collector.num_actions == 2
    assert (dqn.replay.capacity, dqn.replay.batch_size, dqn.replay.gamma) == (10_000, 8, 0.99)
    assert dqn.learner.target == "network" and dqn.warmup == 1_000 and dqn.update_every == 1
    assert [type(op) for op in dqn.operators] == [TargetSync] and dqn.operators[0].period == 200
    tfdqn = build_pipeline(load_pipeline("tfdqn-cartpole")[0])
    assert tfdqn.learner.target == "online" and tfdqn.operators == ()


def test_optimizer_is_adam_with_the_configured_rate_and_eps():
    config = load_pipeline("dqn-cartpole", ["--learner.learning-rate=0.01", "--learner.adam-eps=0.5"])[0]
    optimizer = build_pipeline(config).learner.optimizer
    params = {"w": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray([0.3, -0.1])}
    update, _ = optimizer.update(grads, optimizer.init(params), params)
    # Adam's first step: -lr * g / (|g| + eps) (bias-corrected moments equal g and g^2)
    np.testing.assert_allclose(update["w"], -0.01 * grads["w"] / (jnp.abs(grads["w"]) + 0.5), rtol=1e-5)


# -- bad input: one line naming file, key path and value -------------------------------


def test_missing_pipeline_file():
    error = config_error("no-such-pipeline.toml")
    assert str(error) == "no-such-pipeline.toml: file not found"


def test_toml_syntax_error_names_file_and_line(tmp_path):
    write(tmp_path / "broken.toml", "[run]\nseed = 1\n[replay\nbatch_size = 3\n")
    error = config_error(tmp_path / "broken.toml")
    assert str(error).startswith("broken.toml: TOML syntax error")
    assert "line 3" in str(error)


def test_unknown_key_suggests_the_nearest(tmp_path):
    write(tmp_path / "typo.toml", "[learner]\nlerning_rate = 0.001\n")
    error = config_error(tmp_path / "typo.toml")
    assert str(error) == "typo.toml: learner.lerning_rate = 0.001: unknown key; did you mean learner.learning_rate?"


def test_unknown_section_and_section_used_as_value(tmp_path):
    write(tmp_path / "section.toml", "[replays]\ncapacity = 5\n")
    assert "replays.capacity = 5: unknown key; did you mean replay.capacity?" in str(
        config_error(tmp_path / "section.toml")
    )
    write(tmp_path / "flat.toml", "replay = 5\n")
    assert str(config_error(tmp_path / "flat.toml")) == "flat.toml: replay = 5: is a section, not a value"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[replay]\nbatch_size = "big"\n', "replay.batch_size = 'big': must be an integer"),
        ("[replay]\nbatch_size = 2.5\n", "replay.batch_size = 2.5: must be an integer"),
        ("[learner]\ngamma = true\n", "learner.gamma = True: must be a number"),
        (
            '[learner]\ntarget = "both"\n',
            "learner.target = 'both': must be one of 'network', 'online', 'selected_head'",
        ),
        ("[run]\nprogress = 1\n", "run.progress = 1: must be true or false"),
        ('[network]\nhidden = ["a"]\n', "network.hidden = ['a']: must be an integer"),
    ],
)
def test_wrong_types(tmp_path, body, expected):
    write(tmp_path / "types.toml", body)
    assert str(config_error(tmp_path / "types.toml")) == f"types.toml: {expected}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[replay]\nbatch_size = 0\n", "replay.batch_size = 0: must be > 0"),
        ("[replay]\nbatch_size = -4\n", "replay.batch_size = -4: must be > 0"),
        ("[replay]\ncapacity = 16\nbatch_size = 32\n", "replay.capacity = 16: must be >= replay.batch_size (32)"),
        ("[learner]\ngamma = 1.5\n", "learner.gamma = 1.5: must be in [0, 1]"),
        ("[learner]\ngamma = -0.1\n", "learner.gamma = -0.1: must be in [0, 1]"),
        ("[run]\ntotal_steps = -5\n", "run.total_steps = -5: must be > 0"),
        ("[learner]\nwarmup = -1\n", "learner.warmup = -1: must be >= 0"),
        ("[exploration]\ndecay_steps = -10\n", "exploration.decay_steps = -10: must be >= 0"),
        ('[[operators]]\nkind = "target_sync"\nperiod = 0\n', "operators.target_sync.period = 0: must be >= 1"),
        ("[env]\nnum_envs = 0\n", "env.num_envs = 0: must be >= 1"),
    ],
)
def test_out_of_range_values(tmp_path, body, expected):
    write(tmp_path / "range.toml", body)
    assert str(config_error(tmp_path / "range.toml")) == f"range.toml: {expected}"


def test_out_of_range_value_names_the_file_that_set_it(tmp_path):
    write(tmp_path / "base.toml", "[learner]\ngamma = 2.0\n")
    write(tmp_path / "child.toml", 'extends = "base.toml"\n[replay]\nbatch_size = 16\n')
    assert str(config_error(tmp_path / "child.toml")) == "base.toml: learner.gamma = 2.0: must be in [0, 1]"
    error = config_error("dqn-cartpole", ["--replay.batch-size", "0"])
    assert str(error) == "command line: replay.batch_size = 0: must be > 0"


def test_unknown_envpool_task_id(tmp_path):
    write(tmp_path / "task.toml", '[env]\ntask_id = "CartPole-v9"\n')
    error = config_error(tmp_path / "task.toml")
    assert str(error) == "task.toml: env.task_id = 'CartPole-v9': unknown envpool task id; did you mean 'CartPole-v1'?"


def test_missing_preset(tmp_path):
    write(tmp_path / "preset.toml", '[env]\npreset = "clasic"\n')
    error = config_error(tmp_path / "preset.toml")
    assert str(error) == "preset.toml: env.preset = 'clasic': no preset envs/clasic.toml; did you mean 'classic'?"


def test_extends_errors(tmp_path):
    write(tmp_path / "orphan.toml", 'extends = "nowhere.toml"\n')
    assert "orphan.toml: extends = 'nowhere.toml': base file" in str(config_error(tmp_path / "orphan.toml"))
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    assert "extends itself (cycle)" in str(config_error(tmp_path / "a.toml"))


def test_inconsistent_sections_are_refused():
    with pytest.raises(ConfigError) as error:
        build_pipeline(load_pipeline("dqn-cartpole", ["--learner.target", "online"])[0])
    assert "operators.target_sync.kind = 'target_sync'" in str(error.value) and "target='network'" in str(error.value)
    error = config_error("dqn-cartpole", ["--env.num-envs", "4", "--learner.update-every", "3"])
    assert str(error) == "command line: learner.update_every = 3: must divide env.num_envs (4) or be a multiple of it"


def test_bad_flags():
    assert str(config_error("dqn-cartpole", ["--learner.gamma", "abc"])) == (
        "command line: learner.gamma = 'abc': must be a number"
    )
    assert "did you mean learner.learning_rate?" in str(config_error("dqn-cartpole", ["--learner.lerning-rate", "3"]))
    assert "expected --section.key VALUE" in str(config_error("dqn-cartpole", ["stray"]))
