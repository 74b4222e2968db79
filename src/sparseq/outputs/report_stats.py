"""IQM and stratified-bootstrap intervals (rliable when the score matrix is full, the
same procedure in numpy otherwise)."""

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- statistics


def iqm(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Interquartile mean (25% trimmed on each side), rliable's definition."""
    from scipy.stats import trim_mean

    return trim_mean(values, 0.25, axis=axis)


def bootstrap_iqm(groups: Sequence[np.ndarray], reps: int = 5000, seed: int = 0) -> tuple[Any, Any, Any]:
    """IQM over all runs pooled, with a 95% stratified-bootstrap interval.

    groups: one array per task (stratum), shaped (runs_t, *rest); runs are resampled
    with replacement within each task. Returns (point, low, high), each shaped `rest`.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    rest = groups[0].shape[1:]
    point = iqm(np.concatenate(groups, axis=0), axis=0)
    if len({len(g) for g in groups}) == 1:
        low, high = _rliable_interval(np.stack(groups, axis=1), reps, seed)  # (runs, tasks, *rest)
    else:
        low, high = _numpy_interval(groups, reps, seed)
    return point, np.reshape(low, rest), np.reshape(high, rest)


def _rliable_interval(scores: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from rliable import library as rly

    runs, tasks = scores.shape[:2]

    def pooled_iqm(x: np.ndarray) -> np.ndarray:
        return np.atleast_1d(iqm(x.reshape(runs * tasks, -1), axis=0))

    # rliable draws from NumPy's global generator: seed it for reproducible intervals and
    # put the caller's state back afterwards.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # arch's random_state deprecation
            _, intervals = rly.get_interval_estimates({"x": scores}, pooled_iqm, reps=reps)
    finally:
        np.random.set_state(saved)
    interval = intervals["x"]  # (2, prod(rest))
    return interval[0], interval[1]


def _numpy_interval(groups: Sequence[np.ndarray], reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(reps):
        sample = [g[rng.integers(0, len(g), len(g))] for g in groups]
        stats.append(iqm(np.concatenate(sample, axis=0), axis=0))
    low, high = np.percentile(np.asarray(stats), [2.5, 97.5], axis=0)
    return low, high
