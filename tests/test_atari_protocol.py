"""The Atari preset reaches envpool as the papers' protocol (sticky actions, no no-op
starts, no FIRE reset, 27,000-step truncation, minimal actions, 84x84x4 grayscale),
the collector clips learning rewards while returns stay raw, and human-normalised
scores put the random policy at 0 and the human reference at 1."""

import dataclasses

import jax
import numpy as np
import pytest

from sparseq.outputs import atari_scores
from sparseq.pipeline.config.build import env_options, make_collector, make_replay
from sparseq.pipeline.config.loader import load_pipeline
from sparseq.stages.collect.envpool_collector import EnvpoolCollector
from sparseq.stages.replay import FrameDedupReplay

PROTOCOL = {
    "repeat_action_probability": 0.25,
    "noop_max": 1,
    "use_fire_reset": False,
    "episodic_life": False,
    "reward_clip": False,  # envpool's own clip stays off: the collector clips
    "frame_skip": 4,
    "stack_num": 4,
    "img_height": 84,
    "img_width": 84,
    "gray_scale": True,
    "full_action_space": False,
    "max_episode_steps": 27000,
}


@pytest.fixture(scope="module")
def atari_config():
    config, _, _ = load_pipeline("dqn-atari")
    return config


def test_preset_reaches_envpool_as_the_protocol(atari_config):
    options = dict(env_options(atari_config.env))
    assert "stack_padding" not in options  # sparseq's own option
    collector = make_collector(atari_config)
    spec = collector.env.spec.config
    for name, value in PROTOCOL.items():
        assert getattr(spec, name) == value, name
    assert collector.obs_shape == (4, 84, 84) and collector.obs_dtype == np.uint8
    assert collector.num_actions == 6  # Pong's minimal action set (18 in the full set)
    assert collector.reward_clip == 1.0 and collector.zero_pad_stack == 4
    replay = make_replay(atari_config, collector.obs_shape)
    assert isinstance(replay, FrameDedupReplay) and replay.padding == "zeros" and replay.stack_num == 4


def first_observation(seed: int, noop_max: int) -> np.ndarray:
    collector = EnvpoolCollector(
        "Boxing-v5",
        seed=seed,
        env_options=(("noop_max", noop_max), ("use_fire_reset", False), ("repeat_action_probability", 0.25)),
    )
    return np.asarray(collector.init().obs[0])


def test_no_noop_starts():
    """noop_max = 1: the same first observation for every seed; envpool's default 30
    (the control) gives random no-op starts, hence different ones."""
    fixed = [first_observation(seed, 1) for seed in range(3)]
    assert all((obs == fixed[0]).all() for obs in fixed)
    random_starts = [first_observation(seed, 30) for seed in range(3)]
    assert not all((obs == random_starts[0]).all() for obs in random_starts)


def test_rewards_clipped_for_learning_returns_raw_and_cap_truncates(atari_config):
    """SpaceInvaders pays 5-30 points per alien: learning rewards are clipped to
    [-1, 1], the running return sums raw rewards; a 40-step cap is a truncation
    followed by envpool's auto-reset step, and new episodes start zero-padded."""
    env = dataclasses.replace(atari_config.env, task_id="SpaceInvaders-v5", num_envs=2, max_episode_steps=40)
    collector = make_collector(dataclasses.replace(atari_config, env=env))

    def step(cstate, key):
        actions = jax.random.randint(key, (2,), 0, collector.num_actions)
        cstate, transition, stats = collector.step(cstate, actions)
        return cstate, (transition._replace(obs=transition.obs[:, :3].max(axis=(1, 2, 3))), stats)

    keys = jax.random.split(jax.random.key(0), 120)
    _, (transitions, stats) = jax.jit(lambda c: jax.lax.scan(step, c, keys))(collector.init())
    reward = np.asarray(transitions.reward)
    assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
    # Episode 1 of each env: t = 0..39, auto-reset step at t = 40, next episode from t = 41.
    done = np.asarray(stats.done)
    assert done[39].all() and not done[:39].any()
    assert np.asarray(transitions.truncated)[39].all() and not np.asarray(transitions.terminated).any()
    assert np.asarray(transitions.is_reset_step)[40].all()
    raw_return = np.asarray(stats.episode_return)[39]
    clipped_return = reward[:40].sum(axis=0)
    assert (raw_return >= clipped_return).all() and (raw_return > clipped_return).any()
    # Stacked-frame slots before the episode start are zeros (max over frames 0..2).
    first_obs_older_frames = np.asarray(transitions.obs)[[0, 41]]
    assert (first_obs_older_frames == 0).all()


def test_human_normalised_scores():
    games = atari_scores.atari57()
    assert len(games) == 57 == len(set(games))
    eaude = atari_scores.eaudeqn_games()
    assert len(eaude) == 10 and set(eaude) <= set(games)
    for game in games:
        random_score, human_score = atari_scores.reference_scores(game)
        assert atari_scores.human_normalised(game, random_score) == 0.0
        assert atari_scores.human_normalised(game, human_score) == pytest.approx(1.0, abs=1e-12)
    assert atari_scores.reference_scores("Pong-v5") == (-20.7, 14.6)
    assert atari_scores.reference_scores("ms_pacman") == atari_scores.reference_scores("MsPacman-v5")
    assert atari_scores.human_normalised("Breakout", 30.5 + (30.5 - 1.7)) == pytest.approx(2.0)
    with pytest.raises(KeyError):
        atari_scores.reference_scores("NotAGame-v5")


def test_report_finds_the_reference_scores():
    from sparseq.outputs.report import reference_scores

    assert reference_scores()("Boxing-v5") == (0.1, 12.1)
    assert reference_scores()("CartPole-v1") is None


def test_every_listed_game_is_an_envpool_task():
    from sparseq.stages.collect.tasks import is_atari_task

    assert all(is_atari_task(task) for task in atari_scores.atari57())
