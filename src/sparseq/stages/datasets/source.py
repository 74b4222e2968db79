"""The dataset source stage: a dataset on disk served as replay batches.

`DatasetSource` holds the replay that samples (UniformReplay, or FrameDedupReplay for
stacked frames) sized to the dataset, and how to read the dataset; `load()` reads it
into that replay's state (host side, once per run segment: checkpoints do not copy
it). Reading is by format: sparseq's recordings and Minari datasets
(sparseq.stages.datasets.minari_format), and the DQN Replay layout
(sparseq.stages.datasets.dqn_replay).
"""

from typing import Any

import equinox as eqx
from jax import Array

from sparseq.stages.datasets.stream import DatasetSpec, Stream, replay_state_from_stream
from sparseq.stages.replay.uniform import UniformReplay
from sparseq.types import Batch


class DatasetSource(eqx.Module):
    """Attributes:
    replay: the one-stream replay that samples the dataset (capacity = its entries
        plus n_step padding entries).
    spec: what the dataset holds (shapes, action space, sizes).
    read: () -> Stream, the format's reader bound to its path and options.
    """

    replay: UniformReplay
    spec: DatasetSpec = eqx.field(static=True)
    read: Any = eqx.field(static=True)

    def load(self) -> Any:
        stream: Stream = self.read()
        return replay_state_from_stream(self.replay, stream, after=self.replay.n_step)

    def sample(self, state: Any, key: Array) -> Batch:
        return self.replay.sample(state, key)
