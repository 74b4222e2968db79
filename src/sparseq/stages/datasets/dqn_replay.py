"""Reader for the DQN Replay dataset (Agarwal et al. 2020): Dopamine's checkpointed
circular replay buffers, read into one time-ordered `Stream` of single frames.

A run folder (e.g. Pong/1/replay_logs/) holds, per checkpoint i, gzip-compressed .npy
files `$store$_{observation,action,reward,terminal}_ckpt.{i}.gz` ((C, H, W) uint8,
(C,) int32, (C,) float32, (C,) uint8) and `add_count_ckpt.{i}.gz` (0-d int64: the
transitions ever added; the ring's oldest entry sits at add_count % C once it wrapped).

Choices:
- each checkpoint contributes its valid entries in time order, cut to the FIRST
  round(fraction x valid) of them (at least 2); the slices are concatenated, so each
  one starts a new episode (its first stacks are zero-padded, nothing before them);
- Dopamine stores no final observation: after a terminal transition comes an inserted
  auto-reset entry holding a copy of that transition's own frame (never read as a
  value: the terminal's next value is discounted by 0);
- a slice that ends mid-episode turns its last entry into the auto-reset entry (its
  frame is the true next observation of the one before, which is marked truncated
  and bootstraps); a last entry right after a terminal (or alone) is dropped instead,
  it would be an episode without transitions;
- `skip_padding`: Dopamine writes S - 1 = 3 all-zero padding entries (action 0,
  reward 0) before every episode (after each terminal, and at the start of an
  unwrapped buffer); True drops them by position, False (the default) keeps them as
  ordinary transitions. Padding whose terminal was overwritten at a wrapped ring's
  oldest end cannot be told by position and is kept either way;
- num_actions is max(action) + 1 over the used entries: a lower bound, the pipeline's
  task decides the real action count (a mismatch is checked where both are known).

Memory: observation files are streamed (a real checkpoint is 1M frames, 7 GB): only
the npy header is parsed, needed rows are copied chunk by chunk into the preallocated
`Stream.obs`, the rest is read and discarded, and reading stops after the last needed
row. Peak is about the output plus one 64 MB chunk (and a 4 MB read).
"""

import contextlib
import dataclasses
import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from numpy.lib import format as npy_format

from sparseq.stages.datasets.stream import DatasetError, DatasetSpec, Stream

_OBSERVATION = "$store$_observation"
_ACTION = "$store$_action"
_REWARD = "$store$_reward"
_TERMINAL = "$store$_terminal"
_ADD_COUNT = "add_count"
_STACK = 4  # Dopamine's stack_size for Atari
_CHUNK_BYTES = 64 << 20  # rows decompressed per step (kept or skipped)
_READ_BYTES = 4 << 20
_CHECKPOINT = re.compile(r"^\$store\$_observation_ckpt\.(\d+)\.gz$")


def _path(folder: Path, name: str, checkpoint: int) -> Path:
    return folder / f"{name}_ckpt.{checkpoint}.gz"


def write_dqn_replay(
    folder: str | Path,
    checkpoint: int,
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    add_count: int | None = None,
) -> None:
    """Writes checkpoint `checkpoint` of a run folder in Dopamine's layout.

    observations (C, H, W) uint8; actions (C,) int32; rewards (C,) float32; terminals
    (C,) uint8; add_count defaults to C (a full, unwrapped ring). Arrays are written as
    given (no length checks), so tests can write broken checkpoints.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        _OBSERVATION: np.asarray(observations, np.uint8),
        _ACTION: np.asarray(actions, np.int32),
        _REWARD: np.asarray(rewards, np.float32),
        _TERMINAL: np.asarray(terminals, np.uint8),
        _ADD_COUNT: np.asarray(len(actions) if add_count is None else add_count, np.int64),
    }
    for name, array in arrays.items():
        # compresslevel 1: same format as Dopamine's level 9, much faster for benches.
        with gzip.GzipFile(_path(folder, name, checkpoint), "wb", compresslevel=1) as f:
            np.save(f, array, allow_pickle=False)


def find_checkpoints(folder: str | Path) -> list[int]:
    """Sorted checkpoint indices of the observation files in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    found = (_CHECKPOINT.match(p.name) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[IO[bytes]]:
    """Opens a .npy.gz file; any read failure becomes a one-line DatasetError."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        with gzip.open(path, "rb") as f:
            yield f
    except DatasetError:
        raise
    except (EOFError, OSError, ValueError, zlib.error) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise DatasetError(f"{path}: truncated or corrupt ({detail})") from e


def _read_header(f: IO[bytes], path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Parses the npy header at the stream's position -> (shape, dtype); the stream is
    left at the first data byte."""
    version = npy_format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_2_0(f)
    else:
        raise DatasetError(f"{path}: unsupported .npy version {version}")
    # Rows are streamed in C order; object arrays would need pickle.
    if fortran_order or dtype.hasobject:
        raise DatasetError(f"{path}: not a C-ordered numeric array")
    return tuple(shape), dtype


def _read_exact(f: IO[bytes], view: memoryview, path: Path) -> None:
    got = 0
    while got < len(view):
        # GzipFile.readinto decompresses into a temporary bytes object of the request's
        # size: small requests keep that temporary small.
        n = f.readinto(view[got : got + _READ_BYTES])
        if not n:
            raise DatasetError(f"{path}: truncated or corrupt (data ends early)")
        got += n


def _load_small(path: Path) -> np.ndarray:
    """The whole array of a small file (actions, rewards, terminals, add_count)."""
    with _reading(path) as f:
        shape, dtype = _read_header(f, path)
        data = bytearray(int(np.prod(shape)) * dtype.itemsize)
        _read_exact(f, memoryview(data), path)
    return np.frombuffer(data, dtype).reshape(shape)


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with _reading(path) as f:
        return _read_header(f, path)


@dataclasses.dataclass(frozen=True)
class _Slice:
    """One checkpoint's kept entries, in time order (k of them)."""

    obs_path: Path
    frame_shape: tuple[int, ...]  # (H, W)
    obs_dtype: np.dtype
    rows: np.ndarray  # (k,) int64: file rows
    terminal: np.ndarray  # (k,) bool
    action: np.ndarray  # (k,) int32
    reward: np.ndarray | None  # (k,) float32 (None when only described)


class _Layout(NamedTuple):
    """Where a slice's entries go in the stream (offsets within the slice)."""

    used: int  # m <= k: kept entries that become stream entries (the first m)
    positions: np.ndarray  # (m,) int64: stream offset of kept entry j
    reset_positions: np.ndarray  # (r,) int64: inserted auto-reset entries (after terminals)
    cut: bool  # the last used entry is the auto-reset entry of an unfinished episode
    entries: int
    episodes: int


def _padding_mask(terminal: np.ndarray, starts_buffer: bool) -> np.ndarray:
    """(k,) bool: Dopamine's zero padding, the S - 1 entries after each terminal (and
    at the buffer's start)."""
    t = np.arange(len(terminal))
    last_terminal = np.maximum.accumulate(np.where(terminal, t, -len(terminal) - _STACK))
    previous = np.concatenate([[-len(terminal) - _STACK], last_terminal[:-1]])
    padding = t - previous < _STACK
    if starts_buffer:
        padding |= t < _STACK - 1
    return padding


def _open_slice(folder: Path, checkpoint: int, fraction: float, skip_padding: bool, rewards: bool) -> _Slice:
    obs_path = _path(folder, _OBSERVATION, checkpoint)
    shape, obs_dtype = _header(obs_path)
    if len(shape) != 3:
        raise DatasetError(f"{obs_path}: observations of shape {shape}, expected (capacity, H, W)")
    capacity = shape[0]
    count_path = _path(folder, _ADD_COUNT, checkpoint)
    count = _load_small(count_path)
    if count.size != 1 or count.dtype.kind not in "iu" or int(count.reshape(())) < 0:
        raise DatasetError(f"{count_path}: add_count must be one non-negative integer, got {count!r}")
    add_count = int(count.reshape(()))
    arrays = {}
    for name in (_TERMINAL, _ACTION, _REWARD):
        path = _path(folder, name, checkpoint)
        if name == _REWARD and not rewards:
            length = _header(path)[0]  # only checked: describing reads no rewards
        else:
            arrays[name] = _load_small(path)
            length = arrays[name].shape
        if length != (capacity,):
            raise DatasetError(f"{path}: shape {length}, but {obs_path.name} holds {capacity} entries")
    valid = min(add_count, capacity)
    oldest = add_count % capacity if add_count >= capacity > 0 else 0
    kept = min(valid, max(2, round(fraction * valid)))
    rows = (oldest + np.arange(kept)) % max(capacity, 1)  # kept is 0 when capacity is
    terminal = arrays[_TERMINAL][rows] != 0
    if skip_padding:
        # add_count <= C: index 0 is the first entry ever added, so padding.
        keep = ~_padding_mask(terminal, starts_buffer=add_count <= capacity)
        rows, terminal = rows[keep], terminal[keep]
    return _Slice(
        obs_path=obs_path,
        frame_shape=tuple(shape[1:]),
        obs_dtype=obs_dtype,
        rows=rows,
        terminal=terminal,
        action=arrays[_ACTION][rows].astype(np.int32),
        reward=arrays[_REWARD][rows].astype(np.float32) if rewards else None,
    )


def _layout(terminal: np.ndarray) -> _Layout:
    """terminal (k,) bool of a slice's kept entries -> their stream layout."""
    used = len(terminal)
    cut = used > 0 and not terminal[-1]
    if cut and (used == 1 or terminal[-2]):
        used, cut = used - 1, False
    terminal = terminal[:used]
    terminals_before = np.cumsum(terminal) - terminal
    positions = np.arange(used) + terminals_before
    reset_positions = positions[terminal] + 1
    return _Layout(
        used=used,
        positions=positions,
        reset_positions=reset_positions,
        cut=cut,
        entries=used + len(reset_positions),
        episodes=len(reset_positions) + int(cut),
    )


def _plan(
    folder: str | Path, checkpoints: Iterable[int], fraction: float, skip_padding: bool, rewards: bool
) -> tuple[Path, list[_Slice], list[_Layout]]:
    folder = Path(folder)
    if not 0 < fraction <= 1:
        raise DatasetError(f"{folder}: fraction must be in (0, 1], got {fraction}")
    present = find_checkpoints(folder)
    if not present:
        raise DatasetError(f"{folder}: no DQN Replay checkpoints ({_OBSERVATION}_ckpt.N.gz files)")
    chosen = list(checkpoints) or present
    for checkpoint in chosen:
        if checkpoint not in present:
            listed = ", ".join(map(str, present))
            raise DatasetError(f"{_path(folder, _OBSERVATION, checkpoint)}: absent (present: {listed})")
    slices = [_open_slice(folder, c, fraction, skip_padding, rewards) for c in chosen]
    first = slices[0]
    for s in slices[1:]:
        if (s.frame_shape, s.obs_dtype) != (first.frame_shape, first.obs_dtype):
            mismatch = f"frames {s.frame_shape} {s.obs_dtype}, but {first.obs_path.name} has"
            raise DatasetError(f"{s.obs_path}: {mismatch} {first.frame_shape} {first.obs_dtype}")
    layouts = [_layout(s.terminal) for s in slices]
    if sum(lay.entries - lay.episodes for lay in layouts) == 0:
        raise DatasetError(f"{folder}: no transitions in checkpoints {chosen}")
    return folder, slices, layouts


def describe_dqn_replay(
    folder: str | Path,
    *,
    checkpoints: Iterable[int] = (),
    fraction: float = 1.0,
    task_id: str = "",
    skip_padding: bool = False,
) -> DatasetSpec:
    """The spec `load_dqn_replay` with the same options produces, from the small files
    and the observation files' headers only. checkpoints: () = all present.
    obs_shape is (4, H, W): the stacks the replay rebuilds from (T, 1, H, W) frames.
    num_actions is max(action) + 1 over the used entries; the task decides the real
    count (checked elsewhere)."""
    folder, slices, layouts = _plan(folder, checkpoints, fraction, skip_padding, rewards=False)
    entries = sum(lay.entries for lay in layouts)
    episodes = sum(lay.episodes for lay in layouts)
    # A cut slice's last entry becomes an auto-reset entry: its action is not in the stream.
    max_action = max(int(s.action[: lay.used - lay.cut].max(initial=0)) for s, lay in zip(slices, layouts))
    return DatasetSpec(
        obs_shape=(_STACK, *slices[0].frame_shape),
        obs_dtype=slices[0].obs_dtype,
        num_actions=max_action + 1,
        entries=entries,
        transitions=entries - episodes,
        episodes=episodes,
        task_id=task_id,
        stack_num=_STACK,
        source=str(folder),
    )


def _read_frames(s: _Slice, used: int, destinations: np.ndarray, out: np.ndarray) -> None:
    """Copies file rows s.rows[:used] into out[destinations, 0], streaming the file
    once in row order and stopping after the last needed row."""
    order = np.argsort(s.rows[:used], kind="stable")
    rows, destinations = s.rows[:used][order], destinations[order]
    # Runs of consecutive rows landing on consecutive entries (broken by reset entries
    # and the ring's wrap) are copied as slices: fancy indexing would make a
    # chunk-sized temporary.
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(destinations) != 1)) + 1
    firsts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([firsts, [len(rows)]]))
    runs = list(zip(rows[firsts].tolist(), destinations[firsts].tolist(), lengths.tolist()))
    row_bytes = int(np.prod(s.frame_shape)) * s.obs_dtype.itemsize
    chunk_rows = max(1, _CHUNK_BYTES // max(row_bytes, 1))
    end = int(rows[-1]) + 1
    buffer = np.empty(min(chunk_rows, end) * row_bytes, np.uint8)  # reused: skipped rows cost no memory
    run = 0
    with _reading(s.obs_path) as f:
        _read_header(f, s.obs_path)
        for start in range(0, end, chunk_rows):
            stop = min(start + chunk_rows, end)
            _read_exact(f, memoryview(buffer)[: (stop - start) * row_bytes], s.obs_path)
            chunk = buffer[: (stop - start) * row_bytes].view(s.obs_dtype).reshape(stop - start, *s.frame_shape)
            while run < len(runs) and runs[run][0] < stop:
                row, destination, length = runs[run]
                a, b = max(row, start), min(row + length, stop)
                if a < b:
                    out[destination + a - row : destination + b - row, 0] = chunk[a - start : b - start]
                if row + length > stop:
                    break  # continues in the next chunk
                run += 1


def load_dqn_replay(
    folder: str | Path,
    *,
    checkpoints: Iterable[int] = (),
    fraction: float = 1.0,
    skip_padding: bool = False,
) -> Stream:
    """The chosen checkpoints (() = all, in the given order) as one stream; see the
    module docstring for the mapping. obs (T, 1, H, W) single frames."""
    folder, slices, layouts = _plan(folder, checkpoints, fraction, skip_padding, rewards=True)
    total = sum(lay.entries for lay in layouts)
    obs = np.empty((total, 1, *slices[0].frame_shape), slices[0].obs_dtype)
    action = np.zeros(total, np.int32)
    reward = np.zeros(total, np.float32)
    terminated = np.zeros(total, bool)
    truncated = np.zeros(total, bool)
    is_reset_step = np.zeros(total, bool)
    offset = 0
    for s, lay in zip(slices, layouts):
        at = offset + lay.positions
        action[at] = s.action[: lay.used]
        reward[at] = s.reward[: lay.used]
        terminated[at] = s.terminal[: lay.used]
        resets = offset + lay.reset_positions
        is_reset_step[resets] = True
        if lay.used:
            _read_frames(s, lay.used, at, obs)
            obs[resets] = obs[resets - 1]
        if lay.cut:
            last = at[-1]
            action[last], reward[last], is_reset_step[last] = 0, 0.0, True
            truncated[last - 1] = True
        offset += lay.entries
    return Stream(
        obs=obs,
        action=action,
        reward=reward,
        terminated=terminated,
        truncated=truncated,
        is_reset_step=is_reset_step,
    )
