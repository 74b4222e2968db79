"""Flag forms beyond the basic `--section.key VALUE`: a flag missing its value, and
switching the environment preset from the command line."""

import pytest

from sparseq.pipeline.config.errors import ConfigError
from sparseq.pipeline.config.loader import load_pipeline


def test_flag_without_value_names_the_flag():
    with pytest.raises(ConfigError) as error:
        load_pipeline("dqn-cartpole", ["--run.total_steps"])
    assert str(error.value) == "command line: --run.total-steps: needs a value"


def test_preset_flag_switches_env_values_under_other_flags():
    config, _, _ = load_pipeline("dqn-cartpole", ["--env.preset", "atari", "--env.reward-clip", "2.0"])
    assert config.env.atari.repeat_action_probability == 0.25
    assert config.env.max_episode_steps == 27000  # from the atari preset, over the file's classic preset
    assert config.env.reward_clip == 2.0  # a later flag wins over the preset


def test_unknown_preset_flag_lists_presets():
    with pytest.raises(ConfigError) as error:
        load_pipeline("dqn-cartpole", ["--env.preset", "nope"])
    assert "no preset envs/nope.toml" in str(error.value) and "classic" in str(error.value)
