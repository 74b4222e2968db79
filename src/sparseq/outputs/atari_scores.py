"""Atari game lists and human-normalised scores.

The data lives in envs/atari/ (games.toml, reference_scores.toml, whose header names
the source table). Pure Python, no JAX: `sparseq report` imports this.

    normalised = (score - random) / (human - random)

so the random policy scores 0 and the human reference 1.
"""

import functools
import re
import tomllib
from pathlib import Path

from sparseq.pipeline.config.paths import presets_dir


def atari_data_dir() -> Path:
    return presets_dir() / "atari"


@functools.cache
def _games() -> dict[str, tuple[str, ...]]:
    with (atari_data_dir() / "games.toml").open("rb") as handle:
        return {name: tuple(ids) for name, ids in tomllib.load(handle).items()}


@functools.cache
def _scores() -> dict[str, tuple[float, float]]:
    with (atari_data_dir() / "reference_scores.toml").open("rb") as handle:
        table = tomllib.load(handle)["scores"]
    return {task_id: (float(row["random"]), float(row["human"])) for task_id, row in table.items()}


def atari57() -> tuple[str, ...]:
    """The 57 envpool task ids of the Atari-57 benchmark, e.g. "Pong-v5"."""
    return _games()["atari57"]


def eaudeqn_games() -> tuple[str, ...]:
    """The 10 games of the EauDeQN authors' released models."""
    return _games()["eaudeqn"]


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().removesuffix("-v5"))


@functools.cache
def _by_key() -> dict[str, str]:
    return {_key(task_id): task_id for task_id in _scores()}


def task_id_of(game: str) -> str:
    """ "Pong-v5", "Pong", "pong" or "ms_pacman" -> the envpool task id; KeyError if
    the game has no reference scores."""
    found = _by_key().get(_key(game))
    if found is None:
        raise KeyError(f"no Atari reference scores for {game!r}")
    return found


def reference_scores(game: str) -> tuple[float, float]:
    """(random, human) reference scores of a game (any spelling `task_id_of` takes)."""
    return _scores()[task_id_of(game)]


def human_normalised(game: str, score: float) -> float:
    """(score - random) / (human - random): 0 for the random policy, 1 for human."""
    random_score, human_score = reference_scores(game)
    return (score - random_score) / (human_score - random_score)
