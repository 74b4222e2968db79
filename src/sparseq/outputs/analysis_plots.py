"""analysis.png: the network analyses (srank, dormant neurons, churn, sparsity, weight
norms) against steps, one panel per analysis, one line per layer."""

import json
from pathlib import Path
from typing import Any

PANELS = (
    ("srank", "srank of the last hidden features"),
    ("dormant", "dormant neurons (fraction)"),
    ("churn", "policy churn (fraction of probe actions changed)"),
    ("sparsity", "zero weights (fraction)"),
    ("weight_norm", "weight norm (L2)"),
)
SKIPPED = {"analysis/churn_steps"}


def read_analysis_records(path: Path) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl (or analysis.jsonl) that carry analysis/ keys."""
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in records if any(k.startswith("analysis/") for k in r)]


def _series(records: list[dict[str, Any]], step_key: str, panel: str) -> dict[str, tuple[list[int], list[float]]]:
    series: dict[str, tuple[list[int], list[float]]] = {}
    prefix = f"analysis/{panel}"
    for record in records:
        for key, value in record.items():
            if key in SKIPPED or value is None or not (key == prefix or key.startswith(prefix + "/")):
                continue
            label = key[len(prefix) + 1 :] or panel
            steps, values = series.setdefault(label, ([], []))
            steps.append(int(record.get(step_key, 0)))
            values.append(float(value))
    return series


def plot_analysis(records: list[dict[str, Any]], out: Path, title: str, step_key: str, x_label: str) -> Path | None:
    """Writes `out` (a PNG) from analysis records; None when there are none."""
    panels = [(name, label, _series(records, step_key, name)) for name, label in PANELS]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, (name, label, series) in zip(axes[:, 0], panels):
        for line, (steps, values) in series.items():
            width = 2.0 if line in (name, "overall") else 1.0
            ax.plot(steps, values, marker="o", markersize=2.5, linewidth=width, label=line)
        ax.set_ylabel(name)
        ax.set_title(label, fontsize=9)
        if len(series) > 1:
            ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(x_label)
    figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
