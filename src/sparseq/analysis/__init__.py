"""Network analyses the iS-QL and EauDeQN papers use: srank of the features, dormant
neurons, policy churn, per-layer sparsity and weight norms.

Pure functions of a network and a batch of states. This package may import
sparseq.stages and sparseq.types only (it knows nothing of pipelines or the runner);
`sparseq.runs.analysis` schedules the analyses during training and `sparseq.runs.analyze`
runs them over a finished run's checkpoints.
"""

from sparseq.analysis.dormant import dormant_fraction, dormant_scores
from sparseq.analysis.features import AnalysisError, hidden_activations, unit_activations
from sparseq.analysis.network import analyze_network, greedy_actions, policy_churn
from sparseq.analysis.options import ANALYSIS_METRICS, AnalysisConfig
from sparseq.analysis.rank import srank
from sparseq.analysis.weights import layer_weight_norms, layer_zero_fractions

__all__ = [
    "ANALYSIS_METRICS",
    "AnalysisConfig",
    "AnalysisError",
    "analyze_network",
    "dormant_fraction",
    "dormant_scores",
    "greedy_actions",
    "hidden_activations",
    "layer_weight_norms",
    "layer_zero_fractions",
    "policy_churn",
    "srank",
    "unit_activations",
]
