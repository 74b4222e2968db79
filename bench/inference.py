"""Inference benchmark: dense vs exported-sparse policy on CPU (figures, no asserts).

    python bench/inference.py                 every case, one thread
    python bench/inference.py --threads 0     library default thread counts
    python bench/inference.py --only mlp      cases whose name contains "mlp"

Cases: the MLP at 90/95/99% sparsity and the Nature CNN (84x84x4, 512 units, 18
actions) at 90%. Two MLP widths are measured: the project's small-task MLP (100-100,
LunarLander: 8 inputs, 4 actions) and a 512-512 one on the same task. Weights are pruned
by layer magnitude (`sparsity.prune_to_sparsity`, every layer at the same sparsity,
the output layer included), then exported with `sparseq.outputs.export.build_manifest`.

Each case times three ways to compute Q-values and read them on the host:
- jax-dense:  the masked Equinox network under `jax.jit` (the training code path);
- np-dense:   the exported policy loaded dense (`load_policy(sparse=False)`, BLAS);
- sparse:     the exported policy as stored (`load_policy`, scipy CSR x dense).
"latency" is one observation per call (median over calls, best of ROUNDS interleaved
rounds, so a busy machine hurts every method alike); "throughput" is observations per
second at batch BATCH. Speedups are dense time / sparse time. Targets (issue 6): MLP at
95% >= 3x faster than dense; Nature CNN at 90% >= 1.3x. By default every library runs
single-threaded (scipy's sparse kernels are single-threaded; a deployed actor often is):
ratios between methods, measured in one run on one machine, are the figure to read.
"""

import argparse
import os
import sys


def _set_threads(threads: int) -> None:
    """Must run before numpy / jax are imported."""
    if threads <= 0:
        return
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
    )


ROUNDS = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads per library (0: library defaults)")
    parser.add_argument("--only", default="", help="run only cases whose name contains this")
    parser.add_argument("--seconds", type=float, default=0.25, help="time per method per round (0.25)")
    parser.add_argument("--batch", type=int, default=256, help="batch for throughput (256; CNN: batch / 4)")
    options = parser.parse_args()
    _set_threads(options.threads)

    import time

    import equinox as eqx
    import jax
    import numpy as np

    from sparseq.outputs.export import build_manifest, write_export
    from sparseq.outputs.policy import load_policy
    from sparseq.stages.networks import MLPTorso, NatureCNNTorso, QNetwork
    from sparseq.stages.sparsity import apply_masks, init_masks, prune_to_sparsity

    def mlp(hidden):
        def make(key):
            a, b = jax.random.split(key)
            return QNetwork(MLPTorso(8, hidden, key=a), 1, 4, "lecun_normal", key=b)

        return make, (8,), np.float32

    def cnn(key):
        a, b = jax.random.split(key)
        return QNetwork(NatureCNNTorso((4, 84, 84), dense_units=512, key=a), 1, 18, "xavier_uniform", key=b)

    cases = [(f"mlp-100x100 @ {s:.0%}", *mlp((100, 100)), s) for s in (0.90, 0.95, 0.99)]
    cases += [(f"mlp-512x512 @ {s:.0%}", *mlp((512, 512)), s) for s in (0.90, 0.95, 0.99)]
    cases += [("nature-cnn @ 90%", cnn, (4, 84, 84), np.uint8, 0.90)]
    cases = [c for c in cases if options.only in c[0]]

    def observations(shape, dtype, batch, rng):
        if dtype == np.uint8:
            return rng.integers(0, 256, size=(batch, *shape), dtype=np.uint8)
        return rng.normal(size=(batch, *shape)).astype(np.float32)

    def time_call(fn, obs, seconds):
        """Median seconds per call of fn(obs) over about `seconds`."""
        fn(obs)
        times = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 5:
            start = time.perf_counter()
            fn(obs)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    def best_of_rounds(methods, obs, seconds):
        best = {name: float("inf") for name in methods}
        for _ in range(ROUNDS):
            for name, fn in methods.items():
                best[name] = min(best[name], time_call(fn, obs, seconds))
        return best

    threads = options.threads or "default"
    print(f"jax {jax.__version__}, numpy {np.__version__}, threads {threads}, {os.cpu_count()} CPUs")
    header = (
        f"{'case':<20} {'sparsity':>8} {'stored KiB':>10} {'dense KiB':>9} | "
        f"{'latency us: jax':>15} {'np':>8} {'sparse':>8} {'x jax':>6} {'x np':>6} | "
        f"{'obs/s: jax':>10} {'np':>9} {'sparse':>9} {'x jax':>6} {'x np':>6}"
    )
    print(header)
    print("-" * len(header))
    import tempfile
    from pathlib import Path

    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, obs_shape, dtype, sparsity in cases:
            network = eqx.filter_jit(make)(jax.random.key(0))
            masks = eqx.filter_jit(prune_to_sparsity)(network, init_masks(network), sparsity)
            network = eqx.filter_jit(apply_masks)(network, masks)
            manifest, arrays = build_manifest(
                network, obs_shape=obs_shape, obs_dtype=np.dtype(dtype).name, num_actions=network.head.num_actions
            )
            folder = Path(tmp) / name.replace(" ", "").replace("@", "-").replace("%", "")
            write_export(folder, manifest, arrays)
            sparse, dense = load_policy(folder), load_policy(folder, sparse=False)
            # Plain jax.jit over (params, obs): eqx.filter_jit re-partitions the module at
            # every call (~50-100 us), which would flatter the sparse policy's latency.
            params, static = eqx.partition(network, eqx.is_array)
            forward = jax.jit(lambda params, obs, static=static: jax.vmap(eqx.combine(params, static))(obs))
            methods = {
                "jax": lambda obs, params=params, forward=forward: np.asarray(forward(params, obs)),
                "np": dense.q_values,
                "sparse": sparse.q_values,
            }
            batch = options.batch // 4 if dtype == np.uint8 else options.batch
            one = observations(obs_shape, dtype, 1, rng)
            many = observations(obs_shape, dtype, batch, rng)
            reference = methods["jax"](many)
            for method in ("np", "sparse"):  # the benchmark only means something if all agree
                np.testing.assert_allclose(methods[method](many), reference, rtol=1e-3, atol=1e-3)
            latency = best_of_rounds(methods, one, options.seconds)
            per_batch = best_of_rounds(methods, many, options.seconds)
            throughput = {k: batch / v for k, v in per_batch.items()}
            totals = manifest["totals"]
            row = {
                "case": name,
                "sparsity": totals["sparsity"],
                "latency_us": {k: 1e6 * v for k, v in latency.items()},
                "throughput": throughput,
            }
            results.append(row)
            print(
                f"{name:<20} {totals['sparsity']:>8.1%} {totals['stored_bytes'] / 1024:>10.1f} "
                f"{totals['dense_bytes'] / 1024:>9.1f} | "
                f"{1e6 * latency['jax']:>15.1f} {1e6 * latency['np']:>8.1f} {1e6 * latency['sparse']:>8.1f} "
                f"{latency['jax'] / latency['sparse']:>6.2f} {latency['np'] / latency['sparse']:>6.2f} | "
                f"{throughput['jax']:>10.0f} {throughput['np']:>9.0f} {throughput['sparse']:>9.0f} "
                f"{throughput['sparse'] / throughput['jax']:>6.2f} {throughput['sparse'] / throughput['np']:>6.2f}"
            )
            sys.stdout.flush()
    print("\nx jax / x np: how many times faster the sparse policy is than that dense one (> 1 = sparse wins).")
    for case, target in (("mlp-100x100 @ 95%", 3.0), ("mlp-512x512 @ 95%", 3.0), ("nature-cnn @ 90%", 1.3)):
        row = next((r for r in results if r["case"] == case), None)
        if row is None:
            continue
        lat, thr = row["latency_us"], row["throughput"]
        speedups = {
            "latency vs jax": lat["jax"] / lat["sparse"],
            "latency vs np": lat["np"] / lat["sparse"],
            "throughput vs jax": thr["sparse"] / thr["jax"],
            "throughput vs np": thr["sparse"] / thr["np"],
        }
        text = ", ".join(f"{k} {v:.2f}x {'(met)' if v >= target else '(not met)'}" for k, v in speedups.items())
        print(f"target {case} >= {target}x: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
