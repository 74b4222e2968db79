"""Fidelity of EauDeDQN against DQN and PolyPruneDQN (not run in CI).

    python bench/fidelity_eaudeqn.py                          5 seeds x DQN, PolyPruneDQN, EauDeDQN, LunarLander-v3
    python bench/fidelity_eaudeqn.py --task cartpole          the same on CartPole-v1 (100k steps)
    python bench/fidelity_eaudeqn.py --steps 3000 --seeds 1   a smoke run (minutes)
    python bench/fidelity_eaudeqn.py --hidden 256 256 --criterion global   other axes

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
import json
import sys
import time
from pathlib import Path

import numpy as np

from fidelity_common import chosen_algorithms, fresh_out_dir, train_seed
from sparseq.outputs.report import bootstrap_iqm, final_score, read_run

TASKS = {"lunarlander": ("LunarLander-v3", 200_000), "cartpole": ("CartPole-v1", 100_000)}
ALGORITHMS = ("dqn", "polyprunedqn", "eaudedqn")


def run_one(algorithm: str, task: str, seed: int, steps: int, out_dir: Path, axes: list[str]) -> Path:
    return train_seed(f"{algorithm}-{task}", f"{algorithm}-{task}-seed{seed}", seed, steps, out_dir, axes)


def axes_for(algorithm: str, args: argparse.Namespace) -> list[str]:
    """The experiment-axis overrides this algorithm's runs get."""
    axes = ["--network.hidden", *map(str, args.hidden)] if args.hidden else []
    if args.criterion and algorithm == "eaudedqn":
        axes += ["--operators.prune-select.criterion", args.criterion]
    return axes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="lunarlander")
    parser.add_argument("--steps", type=int, default=0, help="environment steps per run (0: the task's default)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per algorithm")
    parser.add_argument(
        "--algorithms", default=",".join(ALGORITHMS), help=f"comma-separated, of {', '.join(ALGORITHMS)}"
    )
    parser.add_argument("--out-dir", default="runs/fidelity-eaudeqn", help="run folders and results go here")
    parser.add_argument("--hidden", type=int, nargs="+", help="MLP widths for every algorithm (default: 100 100)")
    parser.add_argument(
        "--criterion", choices=("layer", "global"), help="EauDeDQN's pruning criterion (default: the pipeline's)"
    )
    args = parser.parse_args(argv)
    task_id, default_steps = TASKS[args.task]
    steps = args.steps or default_steps
    algorithms = chosen_algorithms(args.algorithms, ALGORITHMS)
    out_dir = fresh_out_dir(args.out_dir)

    scores: dict[str, list[float]] = {}
    sparsity: dict[str, list[float]] = {}
    for algorithm in algorithms:
        scores[algorithm], sparsity[algorithm] = [], []
        for seed in range(args.seeds):
            started = time.perf_counter()
            folder = run_one(algorithm, args.task, seed, steps, out_dir, axes_for(algorithm, args))
            run = read_run(folder)
            score, _ = final_score(run.episode_steps, run.episode_returns, run.env_steps)
            final = float(run.sparsity[-1]) if len(run.sparsity) else 0.0
            scores[algorithm].append(score)
            sparsity[algorithm].append(final)
            seconds = time.perf_counter() - started
            print(
                f"{algorithm:<13} seed {seed}: return {score:8.1f}  sparsity {final:6.1%}  ({seconds:.0f} s, {folder})"
            )

    results = {}
    print(f"\n{task_id}, {steps:,} steps, {args.seeds} seeds: mean training return over the last 10% of steps")
    print(f"{'algorithm':<13} {'IQM':>8} {'95% CI':>20} {'sparsity':>9}  per seed")
    for algorithm, values in scores.items():
        finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
        if finite.size:
            point, low, high = (float(x) for x in bootstrap_iqm([finite], reps=10_000))
        else:
            point = low = high = float("nan")
        mean_sparsity = float(np.mean(sparsity[algorithm]))
        results[algorithm] = {
            "iqm": point,
            "ci_low": low,
            "ci_high": high,
            "per_seed": values,
            "final_sparsity": sparsity[algorithm],
            "mean_final_sparsity": mean_sparsity,
        }
        per_seed = " ".join(f"{v:.1f}" for v in values)
        print(f"{algorithm:<13} {point:8.1f} {f'[{low:.1f}, {high:.1f}]':>20} {mean_sparsity:>9.1%}  {per_seed}")
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
