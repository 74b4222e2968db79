"""Q-networks: a torso (MLP, Nature CNN, IMPALA) under a multi-head linear output layer."""

from sparseq.stages.networks.heads import MultiHeadLinear
from sparseq.stages.networks.impala import ImpalaTorso
from sparseq.stages.networks.initializers import Initializer
from sparseq.stages.networks.mlp import MLPTorso
from sparseq.stages.networks.nature_cnn import NatureCNNTorso
from sparseq.stages.networks.q_network import QNetwork

__all__ = ["ImpalaTorso", "Initializer", "MLPTorso", "MultiHeadLinear", "NatureCNNTorso", "QNetwork"]
