"""PNG plots of a run: episode returns (and any extra series) against environment steps."""

import csv
import json
from pathlib import Path

import numpy as np


def read_episodes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    steps, returns = [], []
    if path.exists():
        with path.open() as handle:
            for row in csv.DictReader(handle):
                steps.append(int(row["env_steps"]))
                returns.append(float(row["episode_return"]))
    return np.asarray(steps), np.asarray(returns)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values)))
    cumulative = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    smoothed = (cumulative[window:] - cumulative[:-window]) / window
    head = cumulative[1:window] / np.arange(1, window)
    return np.concatenate([head, smoothed])


# metrics.jsonl keys drawn on their own axes under the returns when a run logged them.
PLOTTED_METRICS = {
    "eval/return_mean": "evaluation return (raw rewards)",
    "sparsity/overall": "sparsity (fraction pruned)",
}


def metric_series(folder: Path, keys: dict[str, str] = PLOTTED_METRICS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{label: (env_steps, values)} of each key of `keys` that metrics.jsonl holds."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    path = folder / "metrics.jsonl"
    if path.exists():
        with path.open() as handle:
            for line in handle:
                record = json.loads(line)
                for key, label in keys.items():
                    if record.get(key) is not None:
                        steps, values = series.setdefault(label, ([], []))
                        steps.append(int(record.get("env_steps", record.get("gradient_steps", 0))))
                        values.append(float(record[key]))
    return {label: (np.asarray(x), np.asarray(y)) for label, (x, y) in series.items()}


def preload_plotting() -> None:
    """Imports matplotlib (Agg) and its font cache ahead of the first plot: ~1 s that a
    run pays at its end otherwise. Meant for a background thread while the loop runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.font_manager
    import matplotlib.pyplot


def plot_returns(
    folder: Path,
    title: str,
    extra: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    x_label: str = "environment steps",
) -> Path:
    """Writes folder/returns.png: training episode returns (raw rewards), with a
    20-episode moving average; `extra` series go on their own axes below. An offline
    run has no training episodes: its evaluation returns come first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, returns = read_episodes(folder / "episodes.csv")
    extra = dict(extra or {})
    if not len(steps) and extra:
        first_label = next(iter(extra))
        return _plot_series(folder, title, extra, x_label, first_label)
    rows = 1 + len(extra)
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.6 * rows), sharex=True, squeeze=False)
    ax = axes[0, 0]
    if len(steps):
        ax.scatter(steps, returns, s=4, alpha=0.25, color="tab:blue", label="episode")
        ax.plot(steps, moving_average(returns, 20), color="tab:blue", lw=2, label="20-episode mean")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no episode finished", transform=ax.transAxes, ha="center")
    ax.set_ylabel("training return (raw rewards)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    for row, (label, (x, y)) in enumerate(extra.items(), start=1):
        axis = axes[row, 0]
        axis.plot(x, y, color="tab:orange")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(x_label)
    return _save_returns_png(fig, folder)


def _plot_series(
    folder: Path, title: str, series: dict[str, tuple[np.ndarray, np.ndarray]], x_label: str, first: str
) -> Path:
    """returns.png of a run without training episodes: each series on its own axes."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(8, 3.6 * len(series)), sharex=True, squeeze=False)
    for row, (label, (x, y)) in enumerate(series.items()):
        axis = axes[row, 0]
        axis.plot(x, y, color="tab:orange" if label == first else "tab:green", marker="o", ms=3)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(x_label)
    return _save_returns_png(fig, folder)


def _save_returns_png(fig, folder: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = folder / "returns.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
