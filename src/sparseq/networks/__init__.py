"""Q-networks: a torso (MLP, Nature CNN, IMPALA) under a multi-head linear output layer."""

from sparseq.networks.heads import MultiHeadLinear
from sparseq.networks.impala import ImpalaTorso
from sparseq.networks.initializers import Initializer
from sparseq.networks.mlp import MLPTorso
from sparseq.networks.nature_cnn import NatureCNNTorso
from sparseq.networks.q_network import QNetwork

__all__ = ["ImpalaTorso", "Initializer", "MLPTorso", "MultiHeadLinear", "NatureCNNTorso", "QNetwork"]
