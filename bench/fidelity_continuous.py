"""Fidelity of SAC, EauDeSAC and PolyPruneSAC on MuJoCo, next to SBX's SAC (not run in CI).

    python bench/fidelity_continuous.py                          SAC, EauDeSAC, PolyPruneSAC, SBX: Hopper, 3 seeds
    python bench/fidelity_continuous.py --task halfcheetah        the same on HalfCheetah-v5
    python bench/fidelity_continuous.py --steps 8000 --seeds 1    a smoke run
    python bench/fidelity_continuous.py --peer-python ''          without the SBX peer

Each sparseq run is `sparseq train {sac,eaudesac,polyprunesac}-TASK --run.seed S
--run.total-steps N` with the pipeline files' settings (SAC: 256-256, batch 256, lr
3e-4, 5,000 random warm-up steps, tau 0.005; EauDeSAC: K = 3 masked critics, selection
every 1,000 steps, rho 0.05, global magnitude, horizon 80%, the actor following the
selected critic's sparsity, NO final sparsity given; PolyPruneSAC: 20% -> 80% to 95% on
critic and actor). SBX's SAC (bench/peers/sbx_sac.py, the bench venv) runs the same
steps and seeds. A run's score is the mean training return of the episodes that end in
the last 10% of its steps (`sparseq report`'s score); per algorithm the script prints
the IQM over seeds with a 95% bootstrap interval, and the final critic and actor
sparsity. Targets (issue 14): SAC inside SBX's interval; EauDeSAC within 10% of SAC
with >= 80% critic sparsity.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fidelity_common import chosen_algorithms, fresh_out_dir, train_seed
from sparseq.outputs.report import bootstrap_iqm, final_score, read_run

TASKS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}
ALGORITHMS = ("sac", "eaudesac", "polyprunesac", "sbx-sac")


def run_sparseq(algorithm: str, task: str, seed: int, steps: int, out_dir: Path) -> dict:
    name = f"{algorithm}-{task}"
    folder = train_seed(name, f"{name}-seed{seed}", seed, steps, out_dir, ["--eval.every", "0"])
    run = read_run(folder)
    score, _ = final_score(run.episode_steps, run.episode_returns, run.env_steps)
    summary = json.loads((folder / "summary.json").read_text())
    return {
        "score": score,
        "critic_sparsity": float(summary.get("sparsity") or 0.0),
        "actor_sparsity": float(summary.get("actor_sparsity") or 0.0),
        "folder": str(folder),
    }


def run_peer(python: str, task_id: str, seed: int, steps: int) -> dict | None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peers.run_peer import run_sbx

    result = run_sbx(python, task_id, steps, 5_000, seed, timeout=24 * 3600)
    if result is None:
        return None
    # The peer reports the last 10 episodes' mean, its closest figure to the last-10% score.
    return {"score": result.get("last_returns_mean") or float("nan"), "critic_sparsity": 0.0, "actor_sparsity": 0.0}


def interval(values: list[float]) -> tuple[float, float, float]:
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if not finite.size:
        return float("nan"), float("nan"), float("nan")
    point, low, high = bootstrap_iqm([finite], reps=10_000)
    return float(point), float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="hopper")
    parser.add_argument("--steps", type=int, default=100_000, help="environment steps per run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per algorithm")
    parser.add_argument(
        "--algorithms", default=",".join(ALGORITHMS), help=f"comma-separated, of {', '.join(ALGORITHMS)}"
    )
    parser.add_argument(
        "--peer-python", default="/work/bench-venv/bin/python", help="the bench venv's python ('' = none)"
    )
    parser.add_argument("--out-dir", default="runs/fidelity-continuous")
    args = parser.parse_args(argv)
    task_id = TASKS[args.task]
    algorithms = chosen_algorithms(args.algorithms, ALGORITHMS)
    if not args.peer_python and "sbx-sac" in algorithms:
        algorithms.remove("sbx-sac")
    out_dir = fresh_out_dir(args.out_dir)
    results: dict[str, list[dict]] = {}
    for algorithm in algorithms:
        results[algorithm] = []
        for seed in range(args.seeds):
            started = time.perf_counter()
            if algorithm == "sbx-sac":
                one = run_peer(args.peer_python, task_id, seed, args.steps)
                if one is None:
                    break
            else:
                one = run_sparseq(algorithm, args.task, seed, args.steps, out_dir)
            results[algorithm].append(one)
            print(
                f"{algorithm:<13} seed {seed}: return {one['score']:8.1f}  critic sp. {one['critic_sparsity']:6.1%}"
                f"  actor sp. {one['actor_sparsity']:6.1%}  ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    table = {}
    print(f"\n{task_id}, {args.steps:,} steps, {args.seeds} seeds: mean training return over the last 10% of steps")
    print(f"{'algorithm':<13} {'IQM':>8} {'95% CI':>20} {'critic sp.':>10} {'actor sp.':>10}")
    for algorithm, runs in results.items():
        if not runs:
            continue
        point, low, high = interval([r["score"] for r in runs])
        critic = float(np.mean([r["critic_sparsity"] for r in runs]))
        actor = float(np.mean([r["actor_sparsity"] for r in runs]))
        table[algorithm] = {"iqm": point, "ci_low": low, "ci_high": high, "critic_sparsity": critic,
                            "actor_sparsity": actor, "runs": runs}  # fmt: skip
        print(f"{algorithm:<13} {point:8.1f} {f'[{low:.1f}, {high:.1f}]':>20} {critic:>10.1%} {actor:>10.1%}")
    if "sac" in table and "sbx-sac" in table:
        sac, sbx = table["sac"], table["sbx-sac"]
        inside = sbx["ci_low"] <= sac["iqm"] <= sbx["ci_high"]
        print(f"target: SAC IQM {sac['iqm']:.1f} inside SBX's interval: {'met' if inside else 'NOT met'}")
    if "sac" in table and "eaudesac" in table:
        eau, sac = table["eaudesac"], table["sac"]
        close = eau["iqm"] >= sac["iqm"] - 0.1 * abs(sac["iqm"])
        sparse = min(r["critic_sparsity"] for r in eau["runs"]) >= 0.8
        print(
            f"target: EauDeSAC within 10% of SAC ({eau['iqm']:.1f} vs {sac['iqm']:.1f}) with >= 80% critic sparsity"
            f" ({min(r['critic_sparsity'] for r in eau['runs']):.1%} min): {'met' if close and sparse else 'NOT met'}"
        )
    summary = {"task_id": task_id, "steps": args.steps, "seeds": args.seeds, "results": table}
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {out_dir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
