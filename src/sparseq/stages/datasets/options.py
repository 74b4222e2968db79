"""Options of the dataset source (a pipeline file's [dataset] section) and the source
they build. An empty `path` means an online run."""

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sparseq.stages.datasets.source import DatasetSource
from sparseq.stages.datasets.stream import DatasetError, DatasetSpec, Stream, episodes_to_stream
from sparseq.stages.options import Rule, StageOptions
from sparseq.stages.replay.frame_dedup import FrameDedupReplay
from sparseq.stages.replay.uniform import UniformReplay

DatasetFormat = Literal["auto", "minari", "dqn_replay"]


@dataclass(frozen=True)
class DatasetConfig(StageOptions):
    offline: bool = False
    """Learn from the dataset at `path` instead of collecting (offline pipelines set it;
    giving a path implies it)."""
    path: str = ""
    """The dataset to learn from offline: a folder (a sparseq recording, runs/RUN/dataset;
    a Minari dataset; a DQN Replay run folder) or a Minari dataset id under
    $MINARI_DATASETS_PATH. Empty: an online run."""
    format: DatasetFormat = "auto"
    """auto: told by the folder's files (manifest.json or metadata.json: Minari;
    $store$_observation_ckpt.*.gz: DQN Replay)."""
    checkpoints: tuple[int, ...] = ()
    """DQN Replay: which checkpoints (replay_logs' *_ckpt.N.gz) to read; empty = all."""
    fraction: float = 1.0
    """DQN Replay: the first fraction of each checkpoint's transitions (0.1: the
    "10% of the DQN Replay dataset" protocol)."""
    skip_padding: bool = True
    """DQN Replay: drop the 3 all-zero entries Dopamine writes before every episode
    (Dopamine never samples them: their stack history holds the terminal)."""

    @property
    def is_offline(self) -> bool:
        return self.offline or bool(self.path)

    def rules(self) -> list[Rule]:
        hint = (
            "an offline pipeline needs --dataset.path DIR (record one: sparseq train dqn-cartpole --run.record-dataset)"
        )
        return [
            ("path", bool(self.path) or not self.offline, hint),
            ("fraction", 0 < self.fraction <= 1, "must be in (0, 1]"),
        ]


def _is_dqn_replay(folder: Path) -> bool:
    return any(folder.glob("$store$_observation_ckpt.*.gz"))


def dataset_format(config: DatasetConfig) -> tuple[str, str]:
    """(format, location) of `config.path`; DatasetError when nothing is there."""
    path = Path(config.path).expanduser()
    if config.format != "auto":
        return config.format, str(path)
    if path.is_dir():
        if _is_dqn_replay(path):
            return "dqn_replay", str(path)
        return "minari", str(path)
    if path.exists():
        raise DatasetError(f"{config.path}: a dataset is a folder, not a file")
    root = Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
    if (root / config.path).is_dir():
        return "minari", config.path
    raise DatasetError(f"{config.path}: no dataset there (not a folder, nor a Minari id under {root})")


def _read_minari_stream(location: str, action_shape: tuple[int, ...]) -> Stream:
    from sparseq.stages.datasets.minari_format import read_minari

    _, episodes = read_minari(location)
    return episodes_to_stream(episodes, action_shape)


def describe_dataset(config: DatasetConfig) -> tuple[DatasetSpec, functools.partial]:
    """The dataset's spec (from metadata only) and its reader () -> Stream."""
    kind, location = dataset_format(config)
    if kind == "dqn_replay":
        from sparseq.stages.datasets.dqn_replay import describe_dqn_replay, load_dqn_replay

        options = {
            "checkpoints": tuple(config.checkpoints),
            "fraction": config.fraction,
            "skip_padding": config.skip_padding,
        }
        return describe_dqn_replay(location, **options), functools.partial(load_dqn_replay, location, **options)
    from sparseq.stages.datasets.minari_format import describe_minari

    spec = describe_minari(location)
    return spec, functools.partial(_read_minari_stream, location, tuple(spec.action_shape))


def make_dataset_source(
    config: DatasetConfig, *, batch_size: int, n_step: int, gamma: float, stack_padding: str = "zeros"
) -> DatasetSource:
    """The source of `config`: its replay holds exactly the dataset's entries (plus
    n_step auto-reset slots after them), one stream."""
    spec, read = describe_dataset(config)
    common = dict(
        capacity=spec.entries + n_step,
        batch_size=batch_size,
        num_envs=1,
        n_step=n_step,
        gamma=gamma,
        action_shape=tuple(spec.action_shape),
        action_dtype=spec.action_dtype,
    )
    if spec.stack_num:
        replay = FrameDedupReplay(**common, stack_num=spec.stack_num, padding=stack_padding)
    else:
        replay = UniformReplay(**common)
    return DatasetSource(replay=replay, spec=spec, read=read)
