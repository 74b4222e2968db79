"""Options of the value network a pipeline file's [network] section describes, and the
factory that builds one Q-network from them."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import jax
from jax import Array

from sparseq.stages.networks.impala import ImpalaTorso
from sparseq.stages.networks.mlp import MLPTorso
from sparseq.stages.networks.nature_cnn import NatureCNNTorso
from sparseq.stages.networks.q_network import QNetwork
from sparseq.stages.options import Rule, StageOptions


@dataclass(frozen=True)
class NetworkConfig(StageOptions):
    kind: Literal["mlp", "nature_cnn", "impala"] = "mlp"
    hidden: tuple[int, ...] = (100, 100)
    """MLP hidden layer sizes."""
    dense_units: int = 512
    """Nature CNN / IMPALA dense layer size."""
    impala_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of the IMPALA ResNet stacks (the iS-QL authors' 32-64-64; IMPALA's
    original is 16-32-32)."""
    iterations: int = 0
    """K, Bellman iterations learned at once (iS-QL): the output layer gets K + 1 heads
    [Q_bar_0, Q_1..Q_K], head k regressing on head k - 1 at s'. 0 = one head (DQN,
    TF-DQN). K >= 1 needs learner.target = "online" and a shared_target_shift operator."""
    layer_norm: bool = False
    """LayerNorm over features before each ReLU."""
    batch_norm: bool = False
    """SAC critic only (CrossQ): BatchNorm on the input and after each ReLU, with
    (s, a) and (s', a') in ONE batch, running statistics outside the critic loss.
    Needs learner.target = "online" (no target critic)."""
    batch_norm_momentum: float = 0.99
    """Weight of the old running statistics at each training batch."""
    init: Literal["auto", "lecun_normal", "xavier_uniform", "torch_default"] = "auto"
    """auto: LeCun-normal for the MLP, Xavier-uniform for the CNN (the authors' choices)."""

    def rules(self) -> list[Rule]:
        channels = self.impala_channels
        return [
            ("hidden", all(h > 0 for h in self.hidden), "sizes must be > 0"),
            ("dense_units", self.dense_units > 0, "must be > 0"),
            ("iterations", self.iterations >= 0, "must be >= 0 (0 = one head)"),
            ("batch_norm_momentum", 0 <= self.batch_norm_momentum < 1, "must be in [0, 1)"),
            (
                "impala_channels",
                len(channels) > 0 and all(c > 0 for c in channels),
                "must be a non-empty list of sizes > 0",
            ),
        ]

    @property
    def num_heads(self) -> int:
        """Heads of the output layer: K + 1 for iS-QL (K = iterations), else 1."""
        return self.iterations + 1 if self.iterations >= 1 else 1


def make_network_factory(
    network: NetworkConfig, obs_shape: tuple[int, ...], heads: int, num_actions: int
) -> Callable[[Array], QNetwork]:
    if network.kind in ("nature_cnn", "impala"):
        if len(obs_shape) != 3:
            raise ValueError(f"network.kind = {network.kind!r} needs image observations, got shape {obs_shape}")
        init = "xavier_uniform" if network.init == "auto" else network.init

        def make(key):
            torso_key, head_key = jax.random.split(key)
            if network.kind == "impala":
                torso = ImpalaTorso(
                    obs_shape,
                    channels=network.impala_channels,
                    dense_units=network.dense_units,
                    layer_norm=network.layer_norm,
                    init=init,
                    key=torso_key,
                )
            else:
                torso = NatureCNNTorso(
                    obs_shape, dense_units=network.dense_units, layer_norm=network.layer_norm, init=init, key=torso_key
                )
            return QNetwork(torso, heads, num_actions, init, key=head_key)

        return make
    init = "lecun_normal" if network.init == "auto" else network.init
    in_features = 1
    for size in obs_shape:
        in_features *= size

    def make(key):
        torso_key, head_key = jax.random.split(key)
        torso = MLPTorso(in_features, network.hidden, layer_norm=network.layer_norm, init=init, key=torso_key)
        return QNetwork(torso, heads, num_actions, init, key=head_key)

    return make
