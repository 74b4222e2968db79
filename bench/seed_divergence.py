"""How long a seed of a pack (run.seeds) stays bit-equal to its separate single-seed run.

    python bench/seed_divergence.py [PIPELINE] [--steps 30000] [--seeds 0 1 2]

Trains the pack and each seed alone for `--steps` environment steps (the update loop
only: no runner, no files) and prints, per seed, the first environment step whose
action differs and the largest loss difference. The two differ only by float
reassociation of the vmapped matmuls; once a greedy action sits on a near-tie, the
trajectories part ways. Figures in the README ("Many seeds in one process").
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from sparseq.pipeline.config.build import build_pipeline, seed_config
from sparseq.pipeline.config.loader import load_pipeline


def _scan(pipeline, keys, steps: int) -> dict[str, np.ndarray]:
    state = pipeline.init(keys)
    cycles = steps // pipeline.steps_per_cycle
    return jax.device_get(eqx.filter_jit(lambda s: jax.lax.scan(pipeline.step, s, None, length=cycles)[1])(state))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", nargs="?", default="dqn-cartpole")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    config, _, _ = load_pipeline(args.pipeline, ["--run.seeds", *map(str, args.seeds)])
    packed = _scan(build_pipeline(config), jnp.stack([jax.random.key(s) for s in args.seeds]), args.steps)
    for index, seed in enumerate(args.seeds):
        single = _scan(build_pipeline(seed_config(config, seed)), jax.random.key(seed), args.steps)
        cycles = len(single["action"])
        a, b = packed["action"][:, index].reshape(cycles, -1), single["action"].reshape(cycles, -1)
        differ = np.nonzero((a != b).any(axis=1))[0]
        first = f"{int(single['steps'][differ[0]]):,}" if len(differ) else "none"
        loss = float(np.nanmax(np.abs(packed["loss"][:, index] - single["loss"])))
        print(
            f"{args.pipeline} seed {seed}: first differing action at env step {first} of {args.steps:,}; "
            f"largest loss difference {loss:.3g}"
        )


if __name__ == "__main__":
    main()
