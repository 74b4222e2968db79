"""The DQN Replay reader: a tiny synthetic run folder (two checkpoints of 50 frames,
one wrapped ring) read into a stream, checked by hand, and replayed as stacks."""

import shutil
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.stages.datasets import dqn_replay
from sparseq.stages.datasets.dqn_replay import (
    describe_dqn_replay,
    find_checkpoints,
    load_dqn_replay,
    write_dqn_replay,
)
from sparseq.stages.datasets.stream import DatasetError, Stream, replay_state_from_stream
from sparseq.stages.replay.frame_dedup import FrameDedupReplay

CAPACITY = 50
CURSOR = 17  # checkpoint 0 wrapped: add_count = 67, oldest entry at row 17
FILLED = 30  # checkpoint 1 did not wrap: rows 0..29 valid


def frames(base: int, n: int) -> np.ndarray:
    """(n, 84, 84) uint8, frame t distinct (value base + t at pixel (0, 0))."""
    pattern = (np.arange(84 * 84) % 7).reshape(84, 84)
    return ((base + np.arange(n)[:, None, None] + pattern) % 256).astype(np.uint8)


def time_ordered() -> dict[int, dict[str, np.ndarray]]:
    """Each checkpoint's valid entries in time order."""
    t0 = np.arange(CAPACITY)
    t1 = np.arange(FILLED)
    actions1 = t1 % 3
    actions1[3] = 8
    return {
        0: {
            "obs": frames(1, CAPACITY),
            "action": t0 % 4,
            "reward": (t0 * 0.5 - 3).astype(np.float32),
            "terminal": np.isin(t0, [9, 23, 40]),
        },
        1: {
            "obs": frames(101, FILLED),
            "action": actions1,
            "reward": (1 + t1 * 0.25).astype(np.float32),
            "terminal": np.isin(t1, [5, 29]),
        },
    }


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("replay_logs")
    data = time_ordered()
    # Checkpoint 0: a wrapped ring, time step t at row (CURSOR + t) % C.
    rows = (CURSOR + np.arange(CAPACITY)) % CAPACITY
    ring = {k: np.empty_like(v) for k, v in data[0].items()}
    for key, value in data[0].items():
        ring[key][rows] = value
    write_dqn_replay(folder, 0, ring["obs"], ring["action"], ring["reward"], ring["terminal"], CAPACITY + CURSOR)
    # Checkpoint 1: rows past add_count hold junk that must never be read.
    junk = CAPACITY - FILLED
    d = data[1]
    write_dqn_replay(
        folder,
        1,
        np.concatenate([d["obs"], np.full((junk, 84, 84), 255, np.uint8)]),
        np.concatenate([d["action"], np.full(junk, 17)]),
        np.concatenate([d["reward"], np.full(junk, 99.0)]),
        np.concatenate([d["terminal"], np.ones(junk, bool)]),
        FILLED,
    )
    return folder


def expected_stream(slices: list[dict[str, np.ndarray]]) -> Stream:
    """The mapping written out as a loop over each slice's time-ordered transitions."""
    rows: list[tuple] = []
    for s in slices:
        n = len(s["terminal"])
        for i in range(n):
            last = i == n - 1
            if last and not s["terminal"][i]:
                if n == 1 or s["terminal"][i - 1]:
                    break  # an episode without transitions: dropped
                obs, action, reward, terminated, _, reset = rows[-1]
                rows[-1] = (obs, action, reward, terminated, True, reset)  # bootstraps from the cut frame
                rows.append((s["obs"][i], 0, 0.0, False, False, True))
                break
            rows.append((s["obs"][i], s["action"][i], s["reward"][i], bool(s["terminal"][i]), False, False))
            if s["terminal"][i]:
                rows.append((s["obs"][i], 0, 0.0, False, False, True))
    obs, action, reward, terminated, truncated, reset = zip(*rows)
    return Stream(
        obs=np.stack(obs)[:, None],
        action=np.array(action, np.int32),
        reward=np.array(reward, np.float32),
        terminated=np.array(terminated),
        truncated=np.array(truncated),
        is_reset_step=np.array(reset),
    )


def first(fraction_kept: dict[int, int]) -> list[dict[str, np.ndarray]]:
    data = time_ordered()
    return [{k: v[:kept] for k, v in data[c].items()} for c, kept in fraction_kept.items()]


def assert_streams_equal(got: Stream, want: Stream) -> None:
    for field in Stream._fields:
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
        assert getattr(got, field).dtype == getattr(want, field).dtype, field


def test_find_checkpoints(run_folder: Path) -> None:
    assert find_checkpoints(run_folder) == [0, 1]


def test_full_stream_by_hand(run_folder: Path) -> None:
    stream = load_dqn_replay(run_folder)
    assert stream.obs.shape == (85, 1, 84, 84) and stream.obs.dtype == np.uint8
    # Checkpoint 0: terminals at t = 9, 23, 40 each followed by a reset entry; the
    # unfinished last episode ends in a cut (t = 48 truncated, t = 49 the reset entry).
    # Checkpoint 1 starts at entry 53: terminals at t = 5 and 29.
    assert np.flatnonzero(stream.is_reset_step).tolist() == [10, 25, 43, 52, 59, 84]
    assert np.flatnonzero(stream.terminated).tolist() == [9, 24, 42, 58, 83]
    assert np.flatnonzero(stream.truncated).tolist() == [51]
    data = time_ordered()
    np.testing.assert_array_equal(stream.obs[0, 0], data[0]["obs"][0])  # the ring's oldest row, 17
    np.testing.assert_array_equal(stream.obs[10, 0], data[0]["obs"][9])  # reset entry: terminal's frame
    np.testing.assert_array_equal(stream.obs[52, 0], data[0]["obs"][49])  # cut: the true next frame
    assert stream.action[52] == 0 and stream.reward[52] == 0
    assert_streams_equal(stream, expected_stream(first({0: CAPACITY, 1: FILLED})))


@pytest.mark.parametrize(
    ("fraction", "kept"),
    [
        (0.4, {0: 20, 1: 12}),  # both cut mid-episode
        (0.5, {0: 25, 1: 15}),  # checkpoint 0 ends one entry after a terminal: dropped
        (0.01, {0: 2, 1: 2}),  # at least two entries per checkpoint
    ],
)
def test_fraction_keeps_the_first_entries(run_folder: Path, fraction: float, kept: dict[int, int]) -> None:
    stream = load_dqn_replay(run_folder, fraction=fraction)
    assert_streams_equal(stream, expected_stream(first(kept)))
    if fraction == 0.4:
        assert np.flatnonzero(stream.truncated).tolist() == [19, 32]
        assert np.flatnonzero(stream.is_reset_step).tolist() == [10, 20, 27, 33]


@pytest.mark.parametrize(
    "options",
    [{}, {"fraction": 0.4}, {"fraction": 0.5}, {"fraction": 0.01}, {"checkpoints": (1, 0)}, {"checkpoints": (1,)}],
)
def test_describe_matches_load(run_folder: Path, options: dict[str, object]) -> None:
    spec = describe_dqn_replay(run_folder, task_id="Pong", **options)
    stream = load_dqn_replay(run_folder, **options)
    episodes = int(stream.is_reset_step.sum())
    assert (spec.entries, spec.transitions, spec.episodes) == (
        len(stream.reward),
        len(stream.reward) - episodes,
        episodes,
    )
    assert spec.num_actions == int(stream.action.max()) + 1
    assert (spec.obs_shape, spec.obs_dtype, spec.stack_num) == ((4, 84, 84), np.uint8, 4)
    assert spec.task_id == "Pong" and spec.source == str(run_folder)


def test_checkpoint_order_is_kept(run_folder: Path) -> None:
    stream = load_dqn_replay(run_folder, checkpoints=(1, 0))
    assert_streams_equal(stream, expected_stream([first({1: FILLED})[0], first({0: CAPACITY})[0]]))


def test_chunked_reads_give_the_same_stream(run_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = load_dqn_replay(run_folder, fraction=0.4)
    # 3 rows per chunk: needed rows straddle chunk ends, and the wrapped ring's rows
    # come from both ends of the file.
    monkeypatch.setattr(dqn_replay, "_CHUNK_BYTES", 3 * 84 * 84)
    assert_streams_equal(load_dqn_replay(run_folder, fraction=0.4), whole)
    assert_streams_equal(load_dqn_replay(run_folder), expected_stream(first({0: CAPACITY, 1: FILLED})))


def test_replay_rebuilds_zero_padded_stacks(run_folder: Path) -> None:
    stream = load_dqn_replay(run_folder)
    replay = FrameDedupReplay(
        capacity=len(stream.reward), batch_size=4, num_envs=1, n_step=1, gamma=0.99, stack_num=4, padding="zeros"
    )
    state = replay_state_from_stream(replay, stream)
    f0, f1 = time_ordered()[0]["obs"], time_ordered()[1]["obs"]
    zero = np.zeros((84, 84), np.uint8)
    # entry: (its stack, the next entry's stack, discount)
    cases = {
        0: ([zero, zero, zero, f0[0]], [zero, zero, f0[0], f0[1]], 0.99),
        2: ([zero, f0[0], f0[1], f0[2]], [f0[0], f0[1], f0[2], f0[3]], 0.99),
        9: ([f0[6], f0[7], f0[8], f0[9]], [f0[7], f0[8], f0[9], f0[9]], 0.0),  # terminal
        11: ([zero, zero, zero, f0[10]], [zero, zero, f0[10], f0[11]], 0.99),  # after a reset entry
        13: ([zero, f0[10], f0[11], f0[12]], [f0[10], f0[11], f0[12], f0[13]], 0.99),
        51: ([f0[45], f0[46], f0[47], f0[48]], [f0[46], f0[47], f0[48], f0[49]], 0.99),  # truncated
        53: ([zero, zero, zero, f1[0]], [zero, zero, f1[0], f1[1]], 0.99),  # checkpoint 1: no history
        83: ([f1[26], f1[27], f1[28], f1[29]], [f1[27], f1[28], f1[29], f1[29]], 0.0),  # terminal
    }
    times = jnp.asarray(list(cases), jnp.int32)
    # One compile instead of one per eager op (seconds on CPU).
    batch = jax.jit(replay.gather)(state, times, jnp.zeros_like(times))
    for i, (obs, next_obs, discount) in enumerate(cases.values()):
        np.testing.assert_array_equal(np.asarray(batch.obs[i]), np.stack(obs), err_msg=f"obs {i}")
        np.testing.assert_array_equal(np.asarray(batch.next_obs[i]), np.stack(next_obs), err_msg=f"next {i}")
        np.testing.assert_allclose(float(batch.discount[i]), discount)
    np.testing.assert_array_equal(np.asarray(batch.action), stream.action[np.asarray(times)])


def test_skip_padding_drops_dopamine_zero_entries(tmp_path: Path) -> None:
    # Dopamine's layout: 3 zero entries at the buffer start and after each terminal.
    pad = [0, 1, 2, 7, 8, 9]
    obs = frames(1, 12)
    obs[pad] = 0
    actions = np.array([0, 0, 0, 1, 2, 3, 1, 0, 0, 0, 2, 3])
    terminals = np.zeros(12, bool)
    terminals[6] = True
    write_dqn_replay(
        tmp_path,
        0,
        np.concatenate([obs, obs[:8]]),
        np.tile(actions, 2)[:20],
        np.ones(20),
        np.tile(terminals, 2)[:20],
        12,
    )
    stream = load_dqn_replay(tmp_path, skip_padding=True)
    real = [3, 4, 5, 6, 10, 11]
    want = expected_stream(
        [{"obs": obs[real], "action": actions[real], "reward": np.ones(6, np.float32), "terminal": terminals[real]}]
    )
    assert_streams_equal(stream, want)
    spec = describe_dqn_replay(tmp_path, skip_padding=True)
    assert (spec.entries, spec.episodes) == (7, 2)
    assert describe_dqn_replay(tmp_path).entries == len(load_dqn_replay(tmp_path).reward) == 13


def copy_of(run_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_folder, tmp_path / "copy"))


def raises_naming(target: str, call: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert target in message and "\n" not in message, message
    return message


def test_missing_folder_and_no_checkpoints(tmp_path: Path) -> None:
    raises_naming(str(tmp_path / "absent"), load_dqn_replay, tmp_path / "absent")
    raises_naming(str(tmp_path), describe_dqn_replay, tmp_path)


def test_absent_checkpoint_lists_present(run_folder: Path) -> None:
    message = raises_naming("$store$_observation_ckpt.7.gz", load_dqn_replay, run_folder, checkpoints=(0, 7))
    assert "present: 0, 1" in message


def test_missing_companion_file(run_folder: Path, tmp_path: Path) -> None:
    folder = copy_of(run_folder, tmp_path)
    (folder / "$store$_reward_ckpt.1.gz").unlink()
    for call in (describe_dqn_replay, load_dqn_replay):
        raises_naming(str(folder / "$store$_reward_ckpt.1.gz"), call, folder)


@pytest.mark.parametrize("name", ["$store$_observation_ckpt.0.gz", "$store$_terminal_ckpt.1.gz"])
def test_truncated_file(run_folder: Path, tmp_path: Path, name: str) -> None:
    folder = copy_of(run_folder, tmp_path)
    path = folder / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = raises_naming(str(path), load_dqn_replay, folder)
    assert "truncated or corrupt" in message


def test_not_gzip(run_folder: Path, tmp_path: Path) -> None:
    folder = copy_of(run_folder, tmp_path)
    (folder / "$store$_action_ckpt.0.gz").write_bytes(b"not a gzip file")
    message = raises_naming(str(folder / "$store$_action_ckpt.0.gz"), describe_dqn_replay, folder)
    assert "truncated or corrupt" in message


def test_lengths_disagree(tmp_path: Path) -> None:
    write_dqn_replay(tmp_path, 3, frames(0, 10), np.zeros(9), np.zeros(10), np.zeros(10))
    raises_naming(str(tmp_path / "$store$_action_ckpt.3.gz"), load_dqn_replay, tmp_path)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_fraction_out_of_range(run_folder: Path, fraction: float) -> None:
    raises_naming("fraction", describe_dqn_replay, run_folder, fraction=fraction)
    raises_naming(str(run_folder), load_dqn_replay, run_folder, fraction=fraction)
