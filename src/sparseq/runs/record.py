"""`run.record_dataset`: the transitions an online run collects, streamed to
RUN_FOLDER/dataset/ between chunks.

The recorder reads what the chunk wrote to the replay (the replay's ring holds every
stream's recent entries in time order) and writes each episode that ended as one
Minari shard (sparseq.stages.datasets.minari_format): dataset/data/ is a Minari
dataset other tools read, dataset/manifest.json says what it holds and which run
made it. Episodes cut at a checkpoint boundary end there as truncations, exactly as
the replay stores them.

Exact resume: a checkpoint's metadata holds the recorder's position (episodes and
steps written, the replay index read up to, where each stream's open episode began).
A resumed run first rewinds the dataset to that position (shards a killed run wrote
after its last checkpoint are removed), then records from the restored replay, so
the dataset ends up as the straight run's. Shards written before a crash stay
readable: each one is renamed into place whole, and the totals are updated after it.
"""

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sparseq.stages.datasets.minari_format import MinariWriter
from sparseq.stages.datasets.stream import Episode

DATASET_FOLDER = "dataset"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "sparseq-dataset/1"
# The replay state's fields an episode is read from (the vector-observation layout).
RING_FIELDS = ("obs", "action", "reward", "terminated", "truncated", "is_reset_step")


class RecordingError(RuntimeError):
    """The replay no longer holds an episode's start (one line, names the fix)."""


class DatasetRecorder:
    """Writes the completed episodes of every environment stream.

    Args:
        folder: the run folder (the dataset goes to folder/dataset/).
        pipeline: the online pipeline (its replay's layout and its collector's spaces).
        config_dict: the run's resolved configuration, for the manifest.
    """

    def __init__(self, folder: Path, pipeline: Any, config_dict: dict[str, Any]):
        self.folder = folder / DATASET_FOLDER
        self.replay = pipeline.replay
        collector = pipeline.collector
        self.task_id = collector.task_id
        self.num_envs = collector.num_envs
        self.action_shape = tuple(getattr(collector, "action_shape", ()))
        self.obs_shape = tuple(collector.obs_shape)
        name = "".join(c if c.isalnum() else "-" for c in folder.name).strip("-").lower() or "run"
        self.writer = MinariWriter(
            self.folder / "data",
            obs_shape=self.obs_shape,
            num_actions=int(getattr(collector, "num_actions", 0)),
            action_shape=self.action_shape,
            action_low=tuple(getattr(collector, "action_low", ())),
            action_high=tuple(getattr(collector, "action_high", ())),
            dataset_id=f"sparseq/{name}-v0",
            extra_metadata={"sparseq_task_id": self.task_id},
            durable=False,  # rename-into-place already survives a killed process
        )
        self.config_dict = config_dict
        self.read_to = 0  # replay index (per stream) up to which entries were read
        self.episode_start = [0] * self.num_envs  # replay index of each stream's open episode

    # -- checkpoint metadata ---------------------------------------------------
    def position(self) -> dict[str, Any]:
        return {
            "episodes": self.writer.episodes_written,
            "steps": self.writer.steps_written,
            "read_to": self.read_to,
            "episode_start": list(self.episode_start),
        }

    def rewind(self, position: dict[str, Any]) -> None:
        """Back to a checkpoint's `position()` (drops what a killed run wrote later)."""
        self.writer.truncate(int(position["episodes"]), int(position["steps"]))
        self.read_to = int(position["read_to"])
        self.episode_start = [int(s) for s in position["episode_start"]]
        self._write_manifest()

    # -- recording -------------------------------------------------------------
    def flush(self, replay_state: Any) -> int:
        """Writes the episodes that ended in the entries written since the last flush;
        returns how many."""
        count = int(replay_state.count)
        if count <= self.read_to:
            return 0
        slots = self.replay.slots
        new = np.arange(self.read_to, count)
        # Host views of the ring (no copy on CPU); indexing device arrays with
        # varying index shapes would compile a gather per chunk and per episode length.
        ring = {name: np.asarray(getattr(replay_state, name)) for name in RING_FIELDS}
        resets = ring["is_reset_step"][new % slots]  # (k, N)
        episodes: list[Episode] = []
        for u_offset, stream in zip(*np.nonzero(resets)):
            end = int(new[u_offset])  # the auto-reset entry: the episode's final observation
            start = self.episode_start[stream]
            self.episode_start[stream] = end + 1
            if end == start:
                continue  # a boundary's cut right after an auto-reset: no transition
            if count - start > slots:
                raise RecordingError(
                    f"an episode of {end - start:,} steps no longer fits the replay ring of {slots:,} steps per "
                    f"environment: raise replay.capacity for run.record_dataset"
                )
            episodes.append(self._episode(ring, stream, start, end))
        # Streams' episodes interleave in time; writing them in end order keeps ids stable.
        self.read_to = count
        if episodes:
            self.writer.append(episodes)
            self._write_manifest()
        return len(episodes)

    def _episode(self, ring: dict[str, np.ndarray], stream: int, start: int, end: int) -> Episode:
        """Entries start..end (end = the auto-reset entry) of one stream of the ring."""
        rows = np.arange(start, end + 1) % self.replay.slots
        take = lambda name: ring[name][rows[:-1], stream]  # noqa: E731
        return Episode(
            observations=ring["obs"][rows, stream],
            actions=take("action"),
            rewards=take("reward"),
            terminations=take("terminated"),
            truncations=take("truncated"),
        )

    def _write_manifest(self) -> None:
        manifest = {
            "format": MANIFEST_FORMAT,
            "layout": "minari",
            "minari_data": "data",
            "task_id": self.task_id,
            "observation_shape": list(self.obs_shape),
            "observation_dtype": "float32",
            "action_space": {"shape": list(self.action_shape)} if self.action_shape else {"discrete": True},
            "episodes": self.writer.episodes_written,
            "steps": self.writer.steps_written,
            "rewards": "learning rewards (after env.reward_clip)",
            "pipeline": self.config_dict,
        }
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, self.folder / MANIFEST)
