"""Fidelity of iS-DQN against its baselines on LunarLander-v3 (not run in CI).

    python bench/fidelity_isdqn.py                      5 seeds x DQN, TF-DQN, iS-DQN K=3
    python bench/fidelity_isdqn.py --steps 3000 --seeds 1    a smoke run (minutes)
    python bench/fidelity_isdqn.py --algorithms dqn,isdqn --set learner.overlap=true
                                                        the same runs with overrides

Each run is `sparseq train PIPELINE --run.seed S` at the iS-QL paper's small-task
settings (MLP 100-100, Adam 3e-4, T = 200, replay 10,000, batch 32, one update per
env step, warm-up 1,000, epsilon 1 -> 0.01 over 1,000 steps, gamma 0.99, 200,000
steps). A run's score is the mean undiscounted training return of the episodes that
END in the last `--window` environment steps (10,000). Per algorithm the script prints
the interquartile mean over seeds and its 95% percentile-bootstrap interval (seeds
resampled with replacement), and the issue's target: iS-DQN IQM >= 150 and above
TF-DQN. Run folders go to --out-dir; a JSON summary is written next to them.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import trim_mean

from fidelity_common import chosen_algorithms, fresh_out_dir, train_seed

ALGORITHMS = {"dqn": "dqn-lunarlander", "tfdqn": "tfdqn-lunarlander", "isdqn": "isdqn-lunarlander"}


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: 25% trimmed on each side (rliable's definition)."""
    return float(trim_mean(values, 0.25))


def bootstrap_interval(values: np.ndarray, reps: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the IQM, resampling seeds."""
    rng = np.random.default_rng(seed)
    samples = values[rng.integers(0, len(values), size=(reps, len(values)))]
    stats = trim_mean(samples, 0.25, axis=1)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def final_return(folder: Path, total_steps: int, window: int) -> float:
    """Mean return of the episodes ending in (total_steps - window, total_steps]."""
    data = np.genfromtxt(folder / "episodes.csv", delimiter=",", names=True, ndmin=1)
    if data.size == 0:
        return float("nan")
    recent = data["episode_return"][data["env_steps"] > total_steps - window]
    return float(recent.mean()) if recent.size else float("nan")


def run_one(algorithm: str, seed: int, steps: int, out_dir: Path, axes: list[str] = ()) -> Path:
    return train_seed(ALGORITHMS[algorithm], f"{algorithm}-seed{seed}", seed, steps, out_dir, axes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000, help="environment steps per run")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per algorithm")
    parser.add_argument("--window", type=int, default=10_000, help="final window of env steps scored")
    parser.add_argument("--algorithms", default="dqn,tfdqn,isdqn", help=f"comma-separated, of {', '.join(ALGORITHMS)}")
    parser.add_argument("--out-dir", default="runs/fidelity-isdqn", help="run folders and results.json go here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override, repeatable")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds FIRST..FIRST+N-1")
    args = parser.parse_args(argv)
    axes = [part for item in args.set for part in (f"--{item.split('=', 1)[0]}", item.split("=", 1)[1])]
    algorithms = chosen_algorithms(args.algorithms, ALGORITHMS)
    out_dir = fresh_out_dir(args.out_dir)
    window = min(args.window, args.steps)

    scores: dict[str, list[float]] = {}
    for algorithm in algorithms:
        scores[algorithm] = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            started = time.perf_counter()
            folder = run_one(algorithm, seed, args.steps, out_dir, axes)
            score = final_return(folder, args.steps, window)
            scores[algorithm].append(score)
            print(
                f"{algorithm:<6} seed {seed}: {score:8.1f}  ({time.perf_counter() - started:.0f} s, {folder})",
                flush=True,
            )

    results = {}
    print(f"\nLunarLander-v3, {args.steps:,} steps, mean training return over the last {window:,} steps")
    print(f"{'algorithm':<10} {'IQM':>8} {'95% CI':>20}  per seed")
    for algorithm, values in scores.items():
        finite = np.asarray([v for v in values if np.isfinite(v)])
        point = iqm(finite) if finite.size else float("nan")
        low, high = bootstrap_interval(finite) if finite.size else (float("nan"), float("nan"))
        results[algorithm] = {"iqm": point, "ci_low": low, "ci_high": high, "per_seed": values}
        per_seed = " ".join(f"{v:.1f}" for v in values)
        print(f"{algorithm:<10} {point:8.1f} {f'[{low:.1f}, {high:.1f}]':>20}  {per_seed}")
    if "isdqn" in results:
        target = results["isdqn"]["iqm"] >= 150 and (
            "tfdqn" not in results or results["isdqn"]["iqm"] > results["tfdqn"]["iqm"]
        )
        print(f"target: iS-DQN IQM >= 150 and above TF-DQN: {'met' if target else 'NOT met'}")
    summary = {"steps": args.steps, "seeds": args.seeds, "window": window, "overrides": args.set, "results": results}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
