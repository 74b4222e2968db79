"""Fidelity of EauDeDQN against DQN and PolyPruneDQN, its settings grid, and sparse iS-DQN (not run in CI).

    python bench/fidelity_eaudeqn.py                          5 seeds x DQN, PolyPruneDQN, EauDeDQN, LunarLander-v3
    python bench/fidelity_eaudeqn.py --task cartpole          the same on CartPole-v1 (100k steps)
    python bench/fidelity_eaudeqn.py --steps 3000 --seeds 1   a smoke run (minutes)
    python bench/fidelity_eaudeqn.py --hidden 256 256 --criterion global   other axes
    python bench/fidelity_eaudeqn.py --algorithms eaudedqn --grid          rho x optimizer-state grid
    python bench/fidelity_eaudeqn.py --algorithms eaudeisdqn --task cartpole   sparse iS-DQN rows

`--grid` runs EauDeDQN (and sparse iS-DQN, when listed) at every max prune fraction rho
of `--rhos` (default 0.01 0.05 0.2) x optimizer state of `--optimizer-states` (default
copy reset), and prints, per cell, how often a sparser student won the selection in each
fifth of training (from selections.csv; after the 80% horizon nothing is pruned).
Sparse iS-DQN (eaudeisdqn) also gets the issue's CartPole check: final sparsity >= 50%
and a last-20-episode return >= 400 on at least 4 of 5 seeds.

Each run is `sparseq train PIPELINE --run.seed S` with the pipeline files
{dqn,polyprunedqn,eaudedqn}-{lunarlander,cartpole}.toml (MLP 100-100, Adam 3e-4,
T = 200, replay 10,000, batch 32, one update per env step; EauDeDQN K = 4, rho = 0.2,
global magnitude, pruning horizon 80%; PolyPrune 20% -> 80% to 95%). EauDeDQN is
given NO final sparsity. A run's score is `sparseq report`'s: the mean training return
of the episodes ending in the last 10% of its steps. Per algorithm the script prints the
IQM over seeds with its 95% bootstrap interval (seeds resampled), the final overall
sparsity (last logged `sparsity/overall`), and the issue's targets: EauDeDQN >= 80%
sparsity with IQM within 10% of DQN's; PolyPruneDQN ends at 95.0%. Run folders, a
results.json and `sparseq report`'s tables and plots (report/, with the sparsity
plot) go to --out-dir.
"""

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from fidelity_common import chosen_algorithms, fresh_out_dir, train_seed
from sparseq.outputs.report import bootstrap_iqm, final_score, read_run
from sparseq.runs.selections import SELECTIONS_FILE

TASKS = {"lunarlander": ("LunarLander-v3", 200_000), "cartpole": ("CartPole-v1", 100_000)}
ALGORITHMS = ("dqn", "polyprunedqn", "eaudedqn", "eaudeisdqn")
SELECTING = ("eaudedqn", "eaudeisdqn")  # the algorithms with a pruning selection
FIFTHS = 5  # bins of training for the sparser-student win share


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the table: an algorithm and the overrides that make its cell."""

    algorithm: str
    label: str
    axes: tuple[str, ...]

    @property
    def tag(self) -> str:
        return self.label.replace(" ", "-").replace("=", "")


def run_one(variant: Variant, task: str, seed: int, steps: int, out_dir: Path) -> Path:
    name = f"{variant.tag}-{task}-seed{seed}"
    return train_seed(f"{variant.algorithm}-{task}", name, seed, steps, out_dir, variant.axes)


def common_axes(algorithm: str, args: argparse.Namespace) -> list[str]:
    """The experiment-axis overrides every run of this algorithm gets."""
    axes = ["--network.hidden", *map(str, args.hidden)] if args.hidden else []
    if args.criterion and algorithm in SELECTING:
        axes += ["--operators.prune-select.criterion", args.criterion]
    return axes + list(args.overrides)


def variants_for(algorithm: str, args: argparse.Namespace) -> list[Variant]:
    axes = common_axes(algorithm, args)
    if not (args.grid and algorithm in SELECTING):
        return [Variant(algorithm, algorithm, tuple(axes))]
    return [
        Variant(
            algorithm,
            f"{algorithm} rho={rho:g} {state}",
            (
                *axes,
                "--operators.prune-select.max-prune-fraction",
                f"{rho:g}",
                "--operators.prune-select.optimizer-state",
                state,
            ),
        )
        for rho in args.rhos
        for state in args.optimizer_states
    ]


def sparser_win_shares(folder: Path, total_steps: int) -> list[float]:
    """Per fifth of training, the share of selections won by a sparser student (a
    network other than 0, the winner's same-sparsity copy); NaN where none happened."""
    path = folder / SELECTIONS_FILE
    if not path.exists():
        return [float("nan")] * FIFTHS
    rows = np.genfromtxt(path, delimiter=",", names=True, ndmin=1)
    bins = np.minimum((rows["env_steps"] * FIFTHS - 1) // max(total_steps, 1), FIFTHS - 1).astype(int)
    sparser = rows["selected"] > 0
    return [float(sparser[bins == b].mean()) if np.any(bins == b) else float("nan") for b in range(FIFTHS)]


def last_episodes_return(folder: Path) -> float:
    """The mean return of the run's last 20 training episodes (summary.json)."""
    summary = json.loads((folder / "summary.json").read_text())
    value = summary.get("return_recent")
    return float("nan") if value is None else float(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="lunarlander")
    parser.add_argument("--steps", type=int, default=0, help="environment steps per run (0: the task's default)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds FIRST..FIRST+N-1 per algorithm")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (held-out checks: 5)")
    parser.add_argument(
        "--algorithms",
        default="dqn,polyprunedqn,eaudedqn",
        help=f"comma-separated, of {', '.join(ALGORITHMS)}",
    )
    parser.add_argument("--out-dir", default="runs/fidelity-eaudeqn", help="run folders and results go here")
    parser.add_argument("--hidden", type=int, nargs="+", help="MLP widths for every algorithm (default: 100 100)")
    parser.add_argument(
        "--criterion", choices=("layer", "global"), help="the selection's pruning criterion (default: the pipeline's)"
    )
    parser.add_argument(
        "--overrides", nargs=argparse.REMAINDER, default=[], help="further `sparseq train` flags for every run (last)"
    )
    parser.add_argument("--grid", action="store_true", help="rho x optimizer-state cells for the selecting algorithms")
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.01, 0.05, 0.2], help="max prune fractions (--grid)")
    parser.add_argument(
        "--optimizer-states", nargs="+", choices=("copy", "reset"), default=["copy", "reset"], help="(--grid)"
    )
    args = parser.parse_args(argv)
    task_id, default_steps = TASKS[args.task]
    steps = args.steps or default_steps
    algorithms = chosen_algorithms(args.algorithms, ALGORITHMS)
    variants = [v for algorithm in algorithms for v in variants_for(algorithm, args)]
    out_dir = fresh_out_dir(args.out_dir)

    scores: dict[str, list[float]] = {}
    sparsity: dict[str, list[float]] = {}
    last20: dict[str, list[float]] = {}
    shares: dict[str, list[list[float]]] = {}
    for variant in variants:
        label = variant.label
        scores[label], sparsity[label], last20[label], shares[label] = [], [], [], []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            started = time.perf_counter()
            folder = run_one(variant, args.task, seed, steps, out_dir)
            run = read_run(folder)
            score, _ = final_score(run.episode_steps, run.episode_returns, run.env_steps)
            final = float(run.sparsity[-1]) if len(run.sparsity) else 0.0
            scores[label].append(score)
            sparsity[label].append(final)
            last20[label].append(last_episodes_return(folder))
            shares[label].append(sparser_win_shares(folder, steps))
            seconds = time.perf_counter() - started
            print(
                f"{label:<28} seed {seed}: return {score:8.1f}  last 20 {last20[label][-1]:7.1f}  "
                f"sparsity {final:6.1%}  ({seconds:.0f} s, {folder})",
                flush=True,
            )

    results = {}
    print(f"\n{task_id}, {steps:,} steps, {args.seeds} seeds: mean training return over the last 10% of steps")
    print(f"{'variant':<28} {'IQM':>8} {'95% CI':>20} {'sparsity':>9} {'(min-max)':>15}  per seed")
    for label, values in scores.items():
        finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
        if finite.size:
            point, low, high = (float(x) for x in bootstrap_iqm([finite], reps=10_000))
        else:
            point = low = high = float("nan")
        ends = sparsity[label]
        with warnings.catch_warnings():  # a fifth with no selection on any seed stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            win_share = np.nanmean(np.asarray(shares[label], dtype=np.float64), axis=0).tolist()
        results[label] = {
            "iqm": point,
            "ci_low": low,
            "ci_high": high,
            "per_seed": values,
            "last20_per_seed": last20[label],
            "final_sparsity": ends,
            "mean_final_sparsity": float(np.mean(ends)),
            "sparser_win_share_by_fifth": win_share,
        }
        per_seed = " ".join(f"{v:.1f}" for v in values)
        spread = f"({min(ends):.1%}-{max(ends):.1%})"
        print(
            f"{label:<28} {point:8.1f} {f'[{low:.1f}, {high:.1f}]':>20} {np.mean(ends):>9.1%} {spread:>15}  {per_seed}"
        )
    selecting = [label for label, r in results.items() if label.split()[0] in SELECTING]
    if selecting:
        print("\nselections won by a sparser student, per fifth of training (mean over seeds):")
        print(f"{'variant':<28} " + " ".join(f"{f'{20 * b}-{20 * b + 20}%':>8}" for b in range(FIFTHS)))
        for label in selecting:
            row = " ".join(
                f"{v:>8.1%}" if np.isfinite(v) else f"{'-':>8}" for v in results[label]["sparser_win_share_by_fifth"]
            )
            print(f"{label:<28} {row}")
    if "eaudedqn" in results and "dqn" in results:
        eau, dqn = results["eaudedqn"], results["dqn"]
        sparse_enough = min(eau["final_sparsity"]) >= 0.8
        close = eau["iqm"] >= dqn["iqm"] - 0.1 * abs(dqn["iqm"])
        verdict = "met" if sparse_enough and close else "NOT met"
        print(
            f"target: EauDeDQN sparsity >= 80% on every seed ({min(eau['final_sparsity']):.1%} min) and IQM within"
            f" 10% of DQN ({eau['iqm']:.1f} vs {dqn['iqm']:.1f}): {verdict}"
        )
    if "polyprunedqn" in results:
        ends = results["polyprunedqn"]["final_sparsity"]
        exact = all(abs(s - 0.95) < 0.001 for s in ends)
        listed = ", ".join(f"{s:.2%}" for s in ends)
        print(f"target: PolyPruneDQN ends at 95.0% ({listed}): {'met' if exact else 'NOT met'}")
    if args.task == "cartpole":
        for label in (label for label in results if label.startswith("eaudeisdqn")):
            r = results[label]
            passing = sum(s >= 0.5 and ret >= 400 for s, ret in zip(r["final_sparsity"], r["last20_per_seed"]))
            verdict = "met" if passing >= min(4, args.seeds) and args.seeds >= 5 else "NOT met"
            print(
                f"target: {label}: sparsity >= 50% and last-20 return >= 400 on >= 4 of 5 seeds: "
                f"{passing} of {args.seeds}: {verdict}"
            )
    summary = {
        "task_id": task_id,
        "steps": steps,
        "seeds": args.seeds,
        "hidden": args.hidden or "pipeline default",
        "criterion": args.criterion or "pipeline default",
        "results": results,
    }
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:  # tables and plots (returns and sparsity against steps) for the README
        from sparseq.outputs.report import write_report

        write_report([out_dir], out_dir / "report")
        print(f"report and plots: {out_dir / 'report'}")
    except Exception as error:  # the figures above stand without the plots
        print(f"warning: no report plots ({type(error).__name__}: {error})")
    print(f"results: {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
