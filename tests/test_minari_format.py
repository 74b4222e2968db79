"""MinariWriter writes minari 0.5.4's parquet layout, checked against minari itself; the
reader reads it (and minari's own hdf5 datasets) and names broken files in one line."""

import json
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pyarrow.parquet as pq
import pytest
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.dataset.minari_storage import MinariStorage
from minari.serialization import serialize_space

from sparseq.stages.datasets.minari_format import (
    SHARD_FILE,
    MinariWriter,
    describe_minari,
    read_minari,
)
from sparseq.stages.datasets.stream import DatasetError, Episode

DISCRETE = {"obs_shape": (4,), "num_actions": 2}
CONTINUOUS = {"obs_shape": (3,), "num_actions": 0, "action_shape": (2,), "action_low": (-1, -1), "action_high": (1, 1)}


def make_episode(rng: np.random.Generator, length: int, case: dict, *, terminated: bool) -> Episode:
    """One episode of `length` transitions ending terminated, else truncated."""
    obs_dim = case["obs_shape"][0]
    if case["num_actions"]:
        actions = rng.integers(0, case["num_actions"], length).astype(np.int32)
    else:
        actions = rng.uniform(-1, 1, (length, *case["action_shape"])).astype(np.float32)
    flags = np.zeros(length, bool)
    terminations, truncations = flags.copy(), flags.copy()
    (terminations if terminated else truncations)[-1] = True
    return Episode(
        observations=rng.normal(size=(length + 1, obs_dim)).astype(np.float32),
        actions=actions,
        rewards=rng.normal(size=length).astype(np.float32),
        terminations=terminations,
        truncations=truncations,
    )


def three_episodes(case: dict, seed: int = 0) -> list[Episode]:
    """One terminated, one truncated and one of length 1."""
    rng = np.random.default_rng(seed)
    return [
        make_episode(rng, 5, case, terminated=True),
        make_episode(rng, 4, case, terminated=False),
        make_episode(rng, 1, case, terminated=True),
    ]


def writer(path: Path, case: dict, durable: bool = False, **kwargs) -> MinariWriter:
    """Not durable by default: fsyncs only cost time here (the round trip tests both)."""
    return MinariWriter(path, dataset_id="sparseq/test-v0", durable=durable, **case, **kwargs)


def assert_same(read: list, written: list[Episode]) -> None:
    assert len(read) == len(written)
    for got, want in zip(read, written):
        for name in Episode._fields:
            np.testing.assert_array_equal(np.asarray(getattr(got, name)), getattr(want, name), err_msg=name)


@pytest.mark.parametrize("case", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_roundtrip_through_read_minari_and_minari(tmp_path: Path, case: dict) -> None:
    data = tmp_path / "data"
    episodes = three_episodes(case)
    extra = {"sparseq_task_id": "Task-v1", "author": {"me"}}
    writer(data, case, durable=case is DISCRETE, extra_metadata=extra).append(episodes)

    spec, read = read_minari(str(data))
    assert_same(read, episodes)
    assert read[0].observations.dtype == np.float32 and read[0].rewards.dtype == np.float32
    assert read[0].actions.dtype == (np.int32 if case["num_actions"] else np.float32)
    assert (spec.transitions, spec.episodes, spec.entries) == (10, 3, 13)
    assert (spec.obs_shape, spec.num_actions, spec.task_id, spec.stack_num) == (
        case["obs_shape"],
        case["num_actions"],
        "Task-v1",
        0,
    )
    assert spec.action_shape == case.get("action_shape", ())
    assert spec.action_low == tuple(float(x) for x in case.get("action_low", ()))
    assert spec.source == str(data)
    assert describe_minari(str(data)) == spec

    dataset = minari.MinariDataset(data)
    assert (dataset.total_episodes, dataset.total_steps) == (3, 10)
    assert dataset.spec.dataset_id == "sparseq/test-v0"
    via_minari = list(dataset.iterate_episodes())
    assert_same(via_minari, episodes)

    obs_space = gym.spaces.Box(-np.inf, np.inf, case["obs_shape"], np.float32)
    if case["num_actions"]:
        action_space = gym.spaces.Discrete(case["num_actions"])
    else:
        action_space = gym.spaces.Box(-1.0, 1.0, case["action_shape"], np.float32)
    metadata = json.loads((data / "metadata.json").read_text())
    assert metadata["observation_space"] == serialize_space(obs_space)
    assert metadata["action_space"] == serialize_space(action_space)
    assert (metadata["data_format"], metadata["jpeg_encoding"], metadata["minari_version"]) == (
        "parquet",
        False,
        "0.5.4",
    )
    assert json.loads((data / "2" / "metadata.json").read_text()) == {"id": 2, "total_steps": 1}

    # The same episodes through minari's own ParquetStorage: the same shard tables.
    theirs = tmp_path / "theirs"
    storage = MinariStorage.new(theirs, obs_space, action_space, data_format="parquet", jpeg_encoding=False)
    buffers = [
        EpisodeBuffer(
            observations=list(e.observations),
            actions=list(e.actions),
            rewards=list(e.rewards),
            terminations=list(e.terminations),
            truncations=list(e.truncations),
        )
        for e in episodes
    ]
    storage.update_episodes(buffers)
    for k in range(3):
        ours_table, their_table = pq.read_table(data / str(k) / SHARD_FILE), pq.read_table(theirs / str(k) / SHARD_FILE)
        assert ours_table.schema == their_table.schema and ours_table.equals(their_table)
    assert json.loads((theirs / "metadata.json").read_text())["action_space"] == metadata["action_space"]


def test_append_reopen_truncate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    episodes = three_episodes(DISCRETE) + three_episodes(DISCRETE, seed=1)
    first = writer(data, DISCRETE)
    first.append(episodes[:2])
    first.append(episodes[2:3])
    assert (first.episodes_written, first.steps_written) == (3, 10)

    resumed = writer(data, DISCRETE)  # a resumed run: continues the dataset on disk
    assert (resumed.episodes_written, resumed.steps_written) == (3, 10)
    resumed.append(episodes[3:])
    assert_same(read_minari(str(data))[1], episodes)

    resumed.truncate(2, 9)
    assert (resumed.episodes_written, resumed.steps_written) == (2, 9)
    assert not (data / "2").exists()
    assert_same(read_minari(str(data))[1], episodes[:2])
    assert minari.MinariDataset(data).total_steps == 9
    with pytest.raises(DatasetError, match="hold 9 steps, not 8"):
        resumed.truncate(2, 8)

    writer(data, DISCRETE).append(episodes[4:])
    assert_same(read_minari(str(data))[1], episodes[:2] + episodes[4:])
    with pytest.raises(DatasetError, match=r"observation_space is Box\(\(4,\), float32\)"):
        writer(data, CONTINUOUS)
    with pytest.raises(DatasetError, match="action_space"):
        writer(data, {**DISCRETE, "num_actions": 3})


def test_stray_shard_past_totals_is_ignored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    episodes = three_episodes(CONTINUOUS)
    writer(data, CONTINUOUS).append(episodes[:2])
    # As if killed after writing shard 2 but before the metadata update, and during a
    # temporary file of shard 3.
    other = tmp_path / "other"
    writer(other, CONTINUOUS).append(episodes)
    (data / "2").mkdir()
    (data / "2" / SHARD_FILE).write_bytes((other / "2" / SHARD_FILE).read_bytes())
    (data / "3").mkdir()
    (data / "3" / f".{SHARD_FILE}.tmp").write_bytes(b"half a shard")

    assert_same(read_minari(str(data))[1], episodes[:2])
    assert minari.MinariDataset(data).total_episodes == 2
    resumed = writer(data, CONTINUOUS)
    resumed.append(episodes[2:])
    assert_same(read_minari(str(data))[1], episodes)


def test_missing_and_non_dataset_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"no Minari dataset at .*nowhere \(looked for") as missing:
        read_minari(str(tmp_path / "nowhere"))
    assert "\n" not in str(missing.value)
    with pytest.raises(DatasetError, match="no Minari dataset at ns/absent-v0") as missing_id:
        read_minari("ns/absent-v0")  # not a path here, so an id: looked up under the root too
    assert str(tmp_path / "root" / "ns" / "absent-v0" / "data" / "metadata.json") in str(missing_id.value)
    with pytest.raises(DatasetError, match="not a Minari dataset"):
        describe_minari(str(tmp_path))


def test_truncated_shard_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    writer(data, DISCRETE).append(three_episodes(DISCRETE))
    shard = data / "1" / SHARD_FILE
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt") as error:
        read_minari(str(data))
    assert str(error.value).startswith(f"{shard}: ") and "\n" not in str(error.value)


def test_dataset_id_and_dataset_folder_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))
    data = tmp_path / "root" / "sparseq" / "test-v0" / "data"
    episodes = three_episodes(DISCRETE)
    writer(data, DISCRETE).append(episodes)
    spec, read = read_minari("sparseq/test-v0")
    assert spec.source == str(data)
    assert_same(read, episodes)
    assert describe_minari(str(data.parent)).source == str(data)  # a dataset folder holding data/


def test_unsupported_space_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    writer(data, DISCRETE).append(three_episodes(DISCRETE))
    metadata = json.loads((data / "metadata.json").read_text())
    metadata["action_space"] = serialize_space(gym.spaces.MultiDiscrete([2, 3]))
    (data / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(DatasetError, match=r"unsupported action space MultiDiscrete") as error:
        read_minari(str(data))
    assert str(error.value).startswith(str(data))


def test_reads_minari_hdf5_dataset(tmp_path: Path) -> None:
    """A dataset minari wrote itself, in its hdf5 storage (float64 obs, Discrete)."""
    data = tmp_path / "data"
    storage = MinariStorage.new(
        data,
        observation_space=gym.spaces.Box(-1.0, 1.0, (2, 2), np.float64),
        action_space=gym.spaces.Discrete(3),
        data_format="hdf5",
    )
    storage.update_metadata({"dataset_id": "hdf5-v0", "minari_version": "0.5.4"})
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (4, 2, 2))
    buffer = EpisodeBuffer(
        observations=list(obs),
        actions=[0, 2, 1],
        rewards=[1.0, 0.5, 0.0],
        terminations=[False, False, True],
        truncations=[False, False, False],
    )
    storage.update_episodes([buffer])
    spec, (episode,) = read_minari(str(data))
    assert (spec.obs_shape, spec.num_actions, spec.transitions, spec.entries) == ((4,), 3, 3, 4)
    np.testing.assert_array_equal(episode.observations, obs.reshape(4, 4).astype(np.float32))
    np.testing.assert_array_equal(episode.actions, np.array([0, 2, 1], np.int32))
    np.testing.assert_array_equal(episode.terminations, [False, False, True])
