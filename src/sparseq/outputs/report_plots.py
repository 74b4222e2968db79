"""PNG plots of `sparseq report`: IQM curves with bootstrap bands, sparsity, sparsity vs score.

Curves live on a common grid of environment steps per task (0 to the shortest run of
the task, GRID_POINTS points). A run's value at grid point i is the mean return of its
episodes ending in (g[i-1], g[i]], carried forward when none ended there; points before
every run has finished an episode are left out. Bands are pointwise 95%
stratified-bootstrap intervals of the IQM across seeds.
"""

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sparseq.outputs.report import RunData, RunScore, bootstrap_iqm, normalise

GRID_POINTS = 50


def step_grid(total_steps: int, points: int = GRID_POINTS) -> np.ndarray:
    """(points,) grid of environment steps ending at `total_steps`."""
    return np.linspace(0, total_steps, points + 1)[1:]


def return_curve(run: RunData, grid: np.ndarray) -> np.ndarray:
    """(G,) interval-mean training return of `run` on `grid`, carried forward; NaN before
    the first finished episode."""
    curve = np.full(len(grid), np.nan)
    last = np.nan
    bins = np.searchsorted(grid, run.episode_steps, side="left")  # episode e ends in bin (g[i-1], g[i]]
    for i in range(len(grid)):
        returns = run.episode_returns[bins == i]
        if len(returns):
            last = float(returns.mean())
        curve[i] = last
    return curve


def sparsity_curve(run: RunData, grid: np.ndarray) -> np.ndarray:
    """(G,) last logged sparsity at or before each grid point (0 before the first log)."""
    if not len(run.sparsity):
        return np.zeros(len(grid))
    index = np.searchsorted(run.sparsity_steps, grid, side="right") - 1
    return np.where(index >= 0, run.sparsity[np.maximum(index, 0)], 0.0)


def iqm_band(groups: Sequence[np.ndarray], reps: int, seed: int) -> tuple[np.ndarray, ...]:
    """groups: per task (runs_t, G) -> (point, low, high) on the columns finite everywhere."""
    finite = np.all(np.concatenate([np.isfinite(g) for g in groups], axis=0), axis=0)
    point, low, high = (np.full(finite.shape, np.nan) for _ in range(3))
    if finite.any():
        p, lo, hi = bootstrap_iqm([g[:, finite] for g in groups], reps, seed)
        point[finite], low[finite], high[finite] = p, lo, hi
    return point, low, high


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_bands(ax, grid: np.ndarray, curves: dict[str, list[np.ndarray]], reps: int, seed: int) -> None:
    for group, per_task in curves.items():  # group name -> per-task (runs_t, G) curves
        point, low, high = iqm_band(per_task, reps, seed)
        runs = sum(len(g) for g in per_task)
        (line,) = ax.plot(grid, point, lw=2, label=f"{group} (n={runs})")
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2, lw=0)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    ax.set_xlabel("environment steps")


def write_plots(scored: Sequence[RunScore], out: Path, *, reps: int = 1000, seed: int = 0) -> list[Path]:
    plt = _pyplot()
    written: list[Path] = []
    usable = [s for s in scored if not math.isnan(s.score)]
    tasks = sorted({s.run.task_id for s in usable})
    for task in tasks:
        rows = [s for s in usable if s.run.task_id == task]
        grid = step_grid(min(s.run.env_steps for s in rows))
        groups = sorted({s.group for s in rows})
        returns = {g: [np.stack([return_curve(s.run, grid) for s in rows if s.group == g])] for g in groups}
        fig, ax = plt.subplots(figsize=(8, 4.5))
        _draw_bands(ax, grid, returns, reps, seed)
        ax.set_ylabel("training return (raw rewards), IQM")
        ax.set_title(f"{task}: IQM over seeds, 95% bootstrap band")
        written.append(_save(fig, out / f"returns_{_safe(task)}.png", plt))
        sparse = {
            g: [np.stack([sparsity_curve(s.run, grid) for s in rows if s.group == g])]
            for g in groups
            if any(len(s.run.sparsity) for s in rows if s.group == g)
        }
        if sparse:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            _draw_bands(ax, grid, sparse, reps, seed)
            ax.set_ylabel("sparsity (fraction of pruned weights), IQM")
            ax.set_title(f"{task}: sparsity over training")
            written.append(_save(fig, out / f"sparsity_{_safe(task)}.png", plt))
    normalised = _normalised_curves(usable)
    if normalised:
        grid, curves = normalised
        fig, ax = plt.subplots(figsize=(8, 4.5))
        _draw_bands(ax, grid, curves, reps, seed)
        ax.set_ylabel("human-normalised return, IQM")
        ax.set_title("human-normalised IQM over tasks x seeds, 95% stratified-bootstrap band")
        written.append(_save(fig, out / "normalised_iqm.png", plt))
    if usable:
        written.append(_sparsity_vs_score(usable, out, plt))
    return written


def _normalised_curves(usable: Sequence[RunScore]) -> tuple[np.ndarray, dict[str, list[np.ndarray]]] | None:
    rows = [s for s in usable if s.normalised is not None]
    if not rows:
        return None
    grid = step_grid(min(s.run.env_steps for s in rows))
    curves: dict[str, list[np.ndarray]] = {}
    for group in sorted({s.group for s in rows}):
        by_task: dict[str, list[np.ndarray]] = {}
        for s in rows:
            if s.group == group:
                curve = normalise(return_curve(s.run, grid), s.reference)
                by_task.setdefault(s.run.task_id, []).append(curve)
        curves[group] = [np.stack(v) for v in by_task.values()]
    return grid, curves


def _sparsity_vs_score(usable: Sequence[RunScore], out: Path, plt) -> Path:
    all_normalised = all(s.normalised is not None for s in usable)
    panels = ["all tasks"] if all_normalised else sorted({s.run.task_id for s in usable})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    groups = sorted({s.group for s in usable})
    colors = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    for ax, panel in zip(axes[0], panels):
        for group in groups:
            rows = [s for s in usable if s.group == group and panel in ("all tasks", s.run.task_id)]
            if not rows:
                continue
            x = [100 * (s.final_sparsity or 0.0) for s in rows]
            y = [s.normalised if all_normalised else s.score for s in rows]
            ax.scatter(x, y, color=colors[group], label=group, alpha=0.8)
        ax.set_title(panel)
        ax.set_xlabel("final sparsity (%)  (dense runs at 0)")
        ax.set_ylabel("human-normalised final score" if all_normalised else "final score (raw return)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
    return _save(fig, out / "sparsity_vs_score.png", plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
