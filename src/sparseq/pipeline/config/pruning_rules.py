"""Range and consistency checks of the pruning operators' sections (EauDeQN's
prune_select, PolyPruneQN's poly_prune), as (key, ok, reason) rules."""

from sparseq.pipeline.config.schema import PipelineConfig


def pruning_rules(c: PipelineConfig) -> list[tuple[str, bool, str]]:
    select, poly = c.operators.prune_select, c.operators.poly_prune
    return [
        ("operators.prune_select.num_networks", select.num_networks >= 2, "must be >= 2 (K networks)"),
        ("operators.prune_select.max_prune_fraction", 0 < select.max_prune_fraction < 1, "must be in (0, 1)"),
        ("operators.prune_select.horizon", 0 <= select.horizon <= 1, "must be in [0, 1] (a fraction of training)"),
        (
            "operators.prune_select.enabled",
            not (select.enabled and not c.operators.target_sync.enabled),
            "the selection is the target update: it needs operators.target_sync.enabled = true (its period)",
        ),
        ("operators.poly_prune.start", 0 <= poly.start <= 1, "must be in [0, 1] (a fraction of training)"),
        ("operators.poly_prune.end", 0 <= poly.end <= 1, "must be in [0, 1] (a fraction of training)"),
        ("operators.poly_prune.start", poly.start < poly.end, f"must be < operators.poly_prune.end ({poly.end})"),
        ("operators.poly_prune.final_sparsity", 0 <= poly.final_sparsity < 1, "must be in [0, 1)"),
        ("operators.poly_prune.every", poly.every >= 1, "must be >= 1 (gradient steps)"),
        (
            "operators.poly_prune.enabled",
            not (poly.enabled and select.enabled),
            "cannot be combined with operators.prune_select (both set the masks)",
        ),
    ]
