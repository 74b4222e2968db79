"""The [analysis] section: which network analyses run, how often, on how many states."""

from dataclasses import dataclass

from sparseq.stages.options import Rule, StageOptions

ANALYSIS_METRICS = ("srank", "dormant", "churn", "sparsity", "weight_norm")


@dataclass(frozen=True)
class AnalysisConfig(StageOptions):
    """Network analyses of the acting network at log points (metrics.jsonl keys
    analysis/...; analysis.png in the run folder). They read the training state and never
    change it: a run trains identically with or without them."""

    every: int = 0
    """Steps between analyses, a multiple of run.log_every (analyses ride on log points);
    0 = off."""
    metrics: tuple[str, ...] = ANALYSIS_METRICS
    """Which analyses: srank (of the last hidden features), dormant (fraction of dormant
    neurons per layer), churn (share of greedy actions on a probe batch that change
    across churn_period steps), sparsity (fraction of zero weights per layer),
    weight_norm (L2 norm of each layer's weights)."""
    states: int = 2048
    """Replay states per analysis (the iS-QL authors' code: 2,048)."""
    delta: float = 0.01
    """srank threshold: the number of singular values holding 1 - delta of their sum."""
    tau: float = 0.025
    """A neuron is dormant when its activation score (its mean |activation| over the
    states divided by its layer's mean) is <= tau; 0 counts dead neurons only."""
    churn_period: int = 0
    """Steps between the two greedy-action readings of the churn probe; 0 = the
    pipeline's target period (the period of its target_sync, prune_select or
    shared_target_shift operator)."""

    def rules(self) -> list[Rule]:
        unknown = [name for name in self.metrics if name not in ANALYSIS_METRICS]
        return [
            ("every", self.every >= 0, "must be >= 0 (0 = no analysis)"),
            (
                "metrics",
                not unknown,
                f"unknown analysis metric {unknown[0]!r}; known: {', '.join(ANALYSIS_METRICS)}" if unknown else "",
            ),
            ("metrics", bool(self.metrics) or self.every == 0, "names no analysis; give one or set analysis.every = 0"),
            ("states", self.states >= 2, "must be >= 2"),
            ("delta", 0 <= self.delta < 1, "must be in [0, 1)"),
            ("tau", self.tau >= 0, "must be >= 0 (0 = dead neurons only)"),
            ("churn_period", self.churn_period >= 0, "must be >= 0 (0 = the target period)"),
        ]


def target_period(operators: tuple) -> int:
    """The period of a pipeline's target update (target_sync, prune_select or
    shared_target_shift), 0 when it has none (polyak averaging)."""
    for operator in operators:
        roles = operator.owned_roles() if hasattr(operator, "owned_roles") else getattr(operator, "owns", ())
        if ("target_update" in roles or "heads" in roles) and getattr(operator, "period", 0):
            return int(operator.period)
    return 0


def churn_period(options: AnalysisConfig, operators: tuple) -> int:
    """The churn probe's period: the option, else the pipeline's target period."""
    return options.churn_period or target_period(operators)
