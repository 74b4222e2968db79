"""Minari datasets: a streaming writer of Minari's parquet layout, and a reader of any
Minari dataset (parquet, arrow or hdf5) through minari's own API.

The writer produces exactly the files minari 0.5.4's `ParquetStorage` writes, without
calling it: its `update_episodes` re-walks the whole folder for every episode (to
recompute `dataset_size`), which makes recording n episodes O(n^2). Layout:

    <data>/metadata.json              totals, spaces (minari's serialize_space strings), ids
    <data>/<k>/part-0.parquet         episode k: L + 1 rows (obs, actions, rewards, flags)
    <data>/<k>/metadata.json          {"id": k, "total_steps": L}

minari reads episodes 0 .. total_episodes - 1 only, so a shard written before its
metadata update (a run killed in between) is invisible until the totals name it. Every
file is written under a dot-name (which minari's arrow reader skips), flushed to disk
(unless `durable=False`) and renamed into place, so no reader ever sees a half-written
file under its final name.

minari and pyarrow are imported lazily: the rest of sparseq works without them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sparseq.stages.datasets.stream import DatasetError, DatasetSpec, Episode

if TYPE_CHECKING:
    import pyarrow as pa

MINARI_VERSION = "0.5.4"  # the format version written; minari 0.4.0 .. 0.5.x read it
METADATA_FILE = "metadata.json"
SHARD_FILE = "part-0.parquet"
TASK_ID_KEY = "sparseq_task_id"
# minari's DATASET_ID_RE with the version made mandatory: MinariDataset.spec calls
# int(version) and fails on ids without one.
_DATASET_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")
_RESERVED_KEYS = frozenset(
    {
        "total_episodes",
        "total_steps",
        "data_format",
        "jpeg_encoding",
        "observation_space",
        "action_space",
        "dataset_id",
        "minari_version",
        "dataset_size",
    }
)
_READ_CHUNK = 256  # episodes per minari read call: one pyarrow dataset per chunk, not per episode


# ---------------------------------------------------------------------------- spaces


def box_space_json(shape: Sequence[int], low: Any, high: Any, dtype: str = "float32") -> str:
    """A Box space as minari.serialization.serialize_space writes it (same keys, same
    order, values after the cast to `dtype` that gymnasium's Box applies)."""
    shape = tuple(int(d) for d in shape)
    return json.dumps(
        {
            "type": "Box",
            "dtype": dtype,
            "shape": list(shape),
            "low": np.broadcast_to(np.asarray(low, dtype), shape).tolist(),
            "high": np.broadcast_to(np.asarray(high, dtype), shape).tolist(),
        }
    )


def discrete_space_json(n: int) -> str:
    """A Discrete(n) space as minari.serialization.serialize_space writes it (minari
    hard-codes the dtype int64)."""
    return json.dumps({"type": "Discrete", "dtype": "int64", "start": 0, "n": int(n)})


def _space_name(space: dict[str, Any]) -> str:
    """A serialized space, shortly, for messages: Box((3,), float32), Discrete(4), Dict."""
    kind = space.get("type", "?")
    if kind == "Box":
        return f"Box({tuple(space.get('shape', ()))}, {space.get('dtype', '?')})"
    if kind == "Discrete":
        start = space.get("start", 0)
        return f"Discrete({space.get('n', '?')}{f', start={start}' if start else ''})"
    return str(kind)


def _space_label(serialized: Any) -> str:
    """`_space_name` of a serialized space string (the string itself if it isn't one)."""
    try:
        return _space_name(json.loads(serialized))
    except (TypeError, ValueError, AttributeError):
        return str(serialized)


# ---------------------------------------------------------------------------- files


def _fsync_dir(path: Path, durable: bool = True) -> None:
    """Makes the renames inside `path` durable (a no-op where directories can't be opened)."""
    if not durable:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes | memoryview, durable: bool = True) -> int:
    """Writes `data` to `path` through a dot-named temporary file and os.replace, so the
    final name only ever holds complete contents (durable: on disk before the rename,
    else only in the page cache, which outlives a killed process but not the machine);
    returns the byte count."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(tmp, path)
    return len(data)


def _arrow(values: np.ndarray) -> pa.Array:
    """A 1-D numpy array as an arrow array over the same memory (booleans bit-packed).
    Not pa.array: its pandas check imports pandas, about a second on first use."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)  # minari stores author sets as lists
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_metadata(data_path: Path) -> dict[str, Any]:
    """The dataset-level metadata.json, checked for the keys every reader needs."""
    file = data_path / METADATA_FILE
    try:
        metadata = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{file}: not a Minari dataset (unreadable metadata: {_one_line(exc)})") from exc
    if not isinstance(metadata, dict):
        raise DatasetError(f"{file}: not a Minari dataset (metadata is not a JSON object)")
    for key in ("total_episodes", "total_steps", "data_format"):
        if key not in metadata:
            raise DatasetError(f"{file}: not a Minari dataset (its metadata lacks {key!r})")
    return metadata


# ---------------------------------------------------------------------------- writer


class MinariWriter:
    """Appends episodes to a Minari dataset in the parquet layout (see the module
    docstring), resumable: constructing it on a folder that already holds a dataset
    continues that dataset.

    obs_shape: one observation's shape; stored flattened, float32, in a Box(-inf, inf).
    num_actions: A of a Discrete(A) action space; 0 with a non-empty action_shape for a
      continuous Box(action_low, action_high, action_shape, float32).
    dataset_id: a Minari id, `(namespace/)name-v<version>`.
    extra_metadata: more keys for metadata.json (e.g. {"sparseq_task_id": ...},
      "author", "algorithm_name"); the keys the writer owns are refused.
    durable: fsync every file and folder before the metadata names it, so the dataset
      survives a machine crash too (about 3 fsyncs per episode, which dominate the write
      time on slow disks). False keeps only the write-then-rename order: still safe
      against a killed process, the usual way a run ends early.
    """

    def __init__(
        self,
        data_path: Path,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        action_shape: Sequence[int] = (),
        action_low: Sequence[float] = (),
        action_high: Sequence[float] = (),
        dataset_id: str,
        extra_metadata: dict[str, Any] | None = None,
        durable: bool = True,
    ) -> None:
        import pyarrow  # noqa: F401  (fail at construction, not at the first append)

        self._data_path = Path(data_path)
        self._durable = durable
        self._obs_shape = tuple(int(d) for d in obs_shape)
        self._obs_size = int(np.prod(self._obs_shape, dtype=np.int64))
        self._action_shape = tuple(int(d) for d in action_shape)
        self._action_size = int(np.prod(self._action_shape, dtype=np.int64))
        self._num_actions = int(num_actions)
        if self._action_shape:
            if self._num_actions:
                raise ValueError(f"num_actions must be 0 with a continuous action_shape, got {num_actions}")
            if len(action_low) == 0 or len(action_high) == 0:
                raise ValueError("a continuous action space needs action_low and action_high")
            action_json = box_space_json(self._action_shape, action_low, action_high)
        else:
            if self._num_actions <= 0:
                raise ValueError(f"a discrete action space needs num_actions > 0, got {num_actions}")
            action_json = discrete_space_json(self._num_actions)
        if not _DATASET_ID_RE.fullmatch(dataset_id):
            raise ValueError(f"dataset_id {dataset_id!r} is not a Minari id: (namespace/)name-v<version>")
        extra = dict(extra_metadata or {})
        if reserved := sorted(_RESERVED_KEYS.intersection(extra)):
            raise ValueError(f"extra_metadata may not set {', '.join(reserved)}: the writer owns them")
        json.dumps(extra, default=_json_default)  # refuse unserializable values now, not mid-run

        self._metadata: dict[str, Any] = {
            "total_episodes": 0,
            "total_steps": 0,
            "data_format": "parquet",
            "jpeg_encoding": False,
            "observation_space": box_space_json(self._obs_shape, -np.inf, np.inf),
            "action_space": action_json,
            "dataset_id": dataset_id,
            "minari_version": MINARI_VERSION,
            "dataset_size": 0.0,
        }
        # Per written episode: its length and the bytes of its two files, so totals,
        # truncate and dataset_size never re-walk the folder.
        self._lengths: list[int] = []
        self._sizes: list[int] = []
        if (self._data_path / METADATA_FILE).exists():
            self._open_existing(extra)
        else:
            self._data_path.mkdir(parents=True, exist_ok=True)
            self._metadata.update(extra)
            self._write_metadata()

    def _open_existing(self, extra: dict[str, Any]) -> None:
        saved = _read_metadata(self._data_path)
        where = self._data_path
        if saved["data_format"] != "parquet":
            raise DatasetError(f"{where}: holds a {saved['data_format']} dataset; MinariWriter appends to parquet ones")
        for key in ("observation_space", "action_space"):
            if saved.get(key) != self._metadata[key]:
                theirs, ours = _space_label(saved.get(key)), _space_label(self._metadata[key])
                if theirs == ours:  # same kind and shape: the bounds differ, show them
                    theirs, ours = str(saved.get(key)), str(self._metadata[key])
                raise DatasetError(f"{where}: its {key} is {theirs}, not the writer's {ours}")
        if saved.get("dataset_id") != self._metadata["dataset_id"]:
            raise DatasetError(
                f"{where}: holds dataset {saved.get('dataset_id')!r}, not {self._metadata['dataset_id']!r}"
            )
        for k in range(int(saved["total_episodes"])):
            shard = self._data_path / str(k)
            try:
                length = int(json.loads((shard / METADATA_FILE).read_text())["total_steps"])
                size = (shard / SHARD_FILE).stat().st_size + (shard / METADATA_FILE).stat().st_size
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise DatasetError(f"{shard}: episode {k} is missing or unreadable ({_one_line(exc)})") from exc
            self._lengths.append(length)
            self._sizes.append(size)
        if sum(self._lengths) != int(saved["total_steps"]):
            raise DatasetError(
                f"{where}: its episodes hold {sum(self._lengths)} steps, its metadata says {saved['total_steps']}"
            )
        # The writer's own keys as it computes them; everything else kept, then extra's values.
        self._metadata.update({k: v for k, v in saved.items() if k not in _RESERVED_KEYS})
        self._metadata.update(extra)
        self._metadata["total_episodes"] = len(self._lengths)
        self._metadata["total_steps"] = sum(self._lengths)

    @property
    def data_path(self) -> Path:
        return self._data_path

    @property
    def episodes_written(self) -> int:
        return len(self._lengths)

    @property
    def steps_written(self) -> int:
        return int(self._metadata["total_steps"])

    def append(self, episodes: Iterable[Episode]) -> None:
        """Writes each episode's shard, then the new totals (one metadata rewrite per
        call, so batch episodes where you can).

        Each episode: observations (L + 1, *obs_shape), actions (L,) ints in [0, A) or
        (L, *action_shape) floats, rewards / terminations / truncations (L,).
        """
        episodes = list(episodes)
        if not episodes:
            return
        tables = [self._episode_table(i, episode) for i, episode in enumerate(episodes)]  # validate all first
        for table in tables:
            self._write_shard(self.episodes_written, table)
        _fsync_dir(self._data_path, self._durable)  # the new shard folders exist on disk before the totals name them
        self._write_metadata()

    def truncate(self, num_episodes: int, total_steps: int) -> None:
        """Rewinds the dataset to its first `num_episodes` episodes, which must hold
        `total_steps` steps (a resumed run's checkpoint says both)."""
        if not 0 <= num_episodes <= self.episodes_written:
            raise DatasetError(
                f"{self._data_path}: cannot rewind to {num_episodes} episodes, it holds {self.episodes_written}"
            )
        kept_steps = sum(self._lengths[:num_episodes])
        if kept_steps != total_steps:
            raise DatasetError(
                f"{self._data_path}: its first {num_episodes} episodes hold {kept_steps} steps, not {total_steps}"
            )
        del self._lengths[num_episodes:], self._sizes[num_episodes:]
        # Totals first: a crash before the deletions leaves strays that readers ignore.
        self._write_metadata()
        for entry in self._data_path.iterdir():
            if entry.is_dir() and entry.name.isdigit() and int(entry.name) >= num_episodes:
                shutil.rmtree(entry)

    def _episode_table(self, index: int, episode: Episode) -> pa.Table:
        """Episode `index` of an append call as minari's arrow storage encodes it: L + 1
        rows, actions and rewards / flags padded with one zero row at the end."""
        import pyarrow as pa

        rewards = np.asarray(episode.rewards).reshape(-1)
        length = len(rewards)
        what = f"episode {index} of the appended batch"
        observations = np.asarray(episode.observations, np.float32)
        if observations.size != (length + 1) * self._obs_size:
            raise ValueError(f"{what}: {length} rewards need {length + 1} observations of {self._obs_shape}")
        observations = observations.reshape(length + 1, self._obs_size)
        actions = np.asarray(episode.actions)
        flags = {}
        for name in ("terminations", "truncations"):
            flags[name] = np.asarray(getattr(episode, name), bool).reshape(-1)
            if len(flags[name]) != length:
                raise ValueError(f"{what}: {len(flags[name])} {name} for {length} rewards")

        if self._action_shape:
            if actions.size != length * self._action_size:
                raise ValueError(
                    f"{what}: actions of shape {actions.shape}, expected ({length}, *{self._action_shape})"
                )
            padded = np.zeros((length + 1, self._action_size), np.float32)
            padded[:length] = actions.reshape(length, self._action_size)
            action_column = pa.FixedSizeListArray.from_arrays(
                _arrow(padded.reshape(-1)), type=pa.list_(pa.float32(), self._action_size)
            )
        else:
            actions = actions.reshape(-1)
            if len(actions) != length:
                raise ValueError(f"{what}: {len(actions)} actions for {length} rewards")
            if length and (actions.min() < 0 or actions.max() >= self._num_actions):
                raise ValueError(f"{what}: actions outside [0, {self._num_actions})")
            action_column = _arrow(np.concatenate([actions.astype(np.int64), [0]]))  # Discrete's int64

        columns = {
            "observations": pa.FixedSizeListArray.from_arrays(
                _arrow(observations.reshape(-1)), type=pa.list_(pa.float32(), self._obs_size)
            ),
            "actions": action_column,
            # float32, sparseq's reward dtype: minari stores the dtype it is given.
            "rewards": _arrow(np.concatenate([rewards.astype(np.float32), np.zeros(1, np.float32)])),
            "terminations": _arrow(np.concatenate([flags["terminations"], [False]])),
            "truncations": _arrow(np.concatenate([flags["truncations"], [False]])),
        }
        return pa.Table.from_arrays(list(columns.values()), names=list(columns))

    def _write_shard(self, episode_id: int, table: pa.Table) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        shard = self._data_path / str(episode_id)
        if shard.exists():
            shutil.rmtree(shard)  # a stray of a killed run or a rewound episode: never mix its files in
        shard.mkdir()
        sink = pa.BufferOutputStream()
        compression = "zstd" if pa.Codec.is_available("zstd") else "snappy"
        # One row group: minari's reader maps record batches to episodes one to one.
        pq.write_table(table, sink, compression=compression, row_group_size=max(table.num_rows, 1))
        size = _write_atomic(shard / SHARD_FILE, memoryview(sink.getvalue()), self._durable)
        length = table.num_rows - 1
        episode_metadata = json.dumps({"id": episode_id, "total_steps": length}).encode()
        size += _write_atomic(shard / METADATA_FILE, episode_metadata, self._durable)
        _fsync_dir(shard, self._durable)
        self._lengths.append(length)
        self._sizes.append(size)

    def _write_metadata(self) -> None:
        self._metadata["total_episodes"] = len(self._lengths)
        self._metadata["total_steps"] = int(sum(self._lengths))
        self._metadata["dataset_size"] = round(sum(self._sizes) / 1e6, 1)  # MB, as minari's get_size
        text = json.dumps(self._metadata, default=_json_default)
        _write_atomic(self._data_path / METADATA_FILE, text.encode(), self._durable)
        _fsync_dir(self._data_path, self._durable)


# ---------------------------------------------------------------------------- reader


def minari_datasets_root() -> Path:
    """Where minari keeps datasets by id: $MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root) if root else Path.home() / ".minari" / "datasets"


def minari_data_path(path_or_id: str | os.PathLike[str]) -> Path:
    """The `data` folder of a dataset given as that folder, as a dataset folder holding
    `data/`, or as a dataset id (`<root>/<id>/data`, root from `minari_datasets_root`)."""
    given = Path(path_or_id).expanduser()
    candidates = [given, given / "data"]
    if not given.exists() and not given.is_absolute():
        candidates.append(minari_datasets_root() / str(path_or_id) / "data")
    for candidate in candidates:
        if (candidate / METADATA_FILE).is_file():
            return candidate
    if given.exists():
        raise DatasetError(f"{given}: not a Minari dataset (no {METADATA_FILE} in it or in {given / 'data'})")
    looked = ", ".join(str(c / METADATA_FILE) for c in candidates)
    raise DatasetError(f"no Minari dataset at {path_or_id} (looked for {looked})")


def _spaces(data_path: Path, metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The serialized observation and action spaces as dicts; datasets that predate
    stored spaces get them from gymnasium.make(env_spec), as minari does."""
    try:
        if "observation_space" in metadata and "action_space" in metadata:
            return json.loads(metadata["observation_space"]), json.loads(metadata["action_space"])
        from minari.dataset.minari_storage import MinariStorage
        from minari.serialization import serialize_space

        storage = MinariStorage.read(data_path)
        return (
            serialize_space(storage.observation_space, to_string=False),
            serialize_space(storage.action_space, to_string=False),
        )
    except NotImplementedError as exc:
        raise DatasetError(f"{data_path}: unsupported space ({_one_line(exc)})") from exc
    except Exception as exc:  # gym.make of a foreign env can fail in any way
        raise DatasetError(f"{data_path}: cannot read its spaces ({type(exc).__name__}: {_one_line(exc)})") from exc


def _task_id(metadata: dict[str, Any]) -> str:
    """sparseq's own task id when the writer stored one, else the env_spec's id."""
    if metadata.get(TASK_ID_KEY):
        return str(metadata[TASK_ID_KEY])
    env_spec = metadata.get("env_spec")
    if isinstance(env_spec, str):
        try:
            return str(json.loads(env_spec).get("id", ""))
        except (ValueError, AttributeError):
            return ""
    return ""


def _describe(data_path: Path, metadata: dict[str, Any]) -> DatasetSpec:
    obs_space, action_space = _spaces(data_path, metadata)
    if obs_space.get("type") != "Box":
        raise DatasetError(
            f"{data_path}: unsupported observation space {_space_name(obs_space)} (sparseq reads Box observations)"
        )
    obs_size = int(np.prod(obs_space.get("shape", ()), dtype=np.int64))
    num_actions, action_shape, low, high = 0, (), (), ()
    if action_space.get("type") == "Discrete" and int(action_space.get("start", 0)) == 0:
        num_actions = int(action_space["n"])
    elif action_space.get("type") == "Box":
        low = tuple(float(x) for x in np.ravel(action_space["low"]))
        high = tuple(float(x) for x in np.ravel(action_space["high"]))
        if not np.all(np.isfinite(low + high)):
            raise DatasetError(
                f"{data_path}: unsupported action space {_space_name(action_space)} with infinite bounds"
            )
        action_shape = (len(low),)
    else:
        raise DatasetError(
            f"{data_path}: unsupported action space {_space_name(action_space)} "
            "(sparseq reads Discrete(n) starting at 0 or Box actions)"
        )
    transitions, episodes = int(metadata["total_steps"]), int(metadata["total_episodes"])
    return DatasetSpec(
        obs_shape=(obs_size,),
        obs_dtype=np.dtype(np.float32),
        num_actions=num_actions,
        entries=transitions + episodes,
        transitions=transitions,
        episodes=episodes,
        task_id=_task_id(metadata),
        action_shape=action_shape,
        action_low=low,
        action_high=high,
        stack_num=0,
        source=str(data_path),
    )


def describe_minari(path_or_id: str | os.PathLike[str]) -> DatasetSpec:
    """A Minari dataset's DatasetSpec from its metadata alone (no episode is read;
    `entries` assumes every episode holds at least one transition)."""
    data_path = minari_data_path(path_or_id)
    return _describe(data_path, _read_metadata(data_path))


def _shard_name(data_path: Path, data_format: str, episode_id: int) -> str:
    if data_format == "hdf5":
        return f"{data_path / 'main_data.hdf5'} (episode_{episode_id})"
    return str(data_path / str(episode_id) / f"part-0.{data_format}")


def read_minari(path_or_id: str | os.PathLike[str]) -> tuple[DatasetSpec, list[Episode]]:
    """Every episode of a Minari dataset (any storage format minari reads), with its
    DatasetSpec.

    Episodes: observations (L + 1, obs_size) float32, actions (L,) int32 or (L, A)
    float32, rewards (L,) float32, terminations / truncations (L,) bool.
    """
    import minari
    import pyarrow as pa

    data_path = minari_data_path(path_or_id)
    metadata = _read_metadata(data_path)
    spec = _describe(data_path, metadata)
    try:
        dataset = minari.MinariDataset(data_path)
    except Exception as exc:  # minari asserts and raises KeyError / ValueError on foreign metadata
        raise DatasetError(f"{data_path}: minari cannot open it ({type(exc).__name__}: {_one_line(exc)})") from exc
    data_format = str(metadata["data_format"])
    read_errors = (pa.ArrowException, OSError, ValueError, KeyError, IndexError, AssertionError)

    def read(ids: list[int]) -> list[Any]:
        return list(dataset.iterate_episodes(ids))

    episodes: list[Episode] = []
    total = dataset.total_episodes
    for start in range(0, total, _READ_CHUNK):
        ids = list(range(start, min(start + _READ_CHUNK, total)))
        try:
            raw = read(ids)
        except read_errors as chunk_exc:
            # Find the bad shard one episode at a time (a chunk's error names no episode).
            for episode_id in ids:
                try:
                    read([episode_id])
                except read_errors as exc:
                    shard = _shard_name(data_path, data_format, episode_id)
                    state = "missing" if data_format != "hdf5" and not Path(shard).exists() else "truncated or corrupt"
                    raise DatasetError(f"{shard}: {state} ({type(exc).__name__}: {_one_line(exc)})") from exc
            first, last = ids[0], ids[-1]
            reason = f"{type(chunk_exc).__name__}: {_one_line(chunk_exc)}"
            raise DatasetError(f"{data_path}: episodes {first}..{last} unreadable ({reason})") from chunk_exc
        if len(raw) != len(ids):
            raise DatasetError(f"{data_path}: minari returned {len(raw)} of episodes {ids[0]}..{ids[-1]}")
        for episode_id, data in zip(ids, raw):
            episodes.append(_to_episode(data, spec, _shard_name(data_path, data_format, episode_id)))

    transitions = sum(len(e.rewards) for e in episodes)
    if transitions != spec.transitions:
        raise DatasetError(f"{data_path}: its episodes hold {transitions} steps, its metadata says {spec.transitions}")
    nonempty = sum(len(e.rewards) > 0 for e in episodes)
    return dataclasses.replace(spec, entries=transitions + nonempty), episodes


def _to_episode(data: Any, spec: DatasetSpec, shard: str) -> Episode:
    """A minari EpisodeData in sparseq's dtypes and flat shapes."""
    try:
        rewards = np.asarray(data.rewards, np.float32).reshape(-1)
        length = len(rewards)
        observations = np.asarray(data.observations, np.float32).reshape(length + 1, *spec.obs_shape)
        actions = np.asarray(data.actions)
        if spec.continuous:
            actions = actions.astype(np.float32).reshape(length, *spec.action_shape)
        else:
            actions = actions.astype(np.int32).reshape(length)
        terminations = np.asarray(data.terminations, bool).reshape(length)
        truncations = np.asarray(data.truncations, bool).reshape(length)
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{shard}: arrays do not fit its spaces ({_one_line(exc)})") from exc
    return Episode(observations, actions, rewards, terminations, truncations)
