"""Peer figure for sparseq's SAC benchmark: SBX (Stable-Baselines3 in JAX) SAC or CrossQ
on a Gymnasium MuJoCo task, one env, on the CPU.

Run it with the bench venv's python, NOT the project's (see bench/peers/README.md):

    /work/bench-venv/bin/python bench/peers/sbx_sac.py --env HalfCheetah-v5 --steps 20000 --json

Settings follow sparseq's SAC defaults: lr 3e-4, batch 256, 256-256 actor and twin critics,
buffer max(1e6, steps), `warmup` uniform-random steps before the first gradient step
(SB3's learning_starts), train_freq 1, gradient_steps 1, gamma 0.99, tau 0.005,
ent_coef "auto" (initial 1.0, target entropy -|A|). `--algo crossq` keeps SBX's CrossQ
defaults (BatchRenorm critics of 1024-1024, no target critic, policy_delay 3, Adam b1 0.5)
but with the same lr, batch and warm-up.

The rate is env steps per second of wall time over the steps after warmup + skip (skip,
500 by default, leaves out the JIT compilation of the first update and of the policy),
taken from a callback that records (time, num_timesteps) at every step.
"""

import argparse
import json
import os
import sys
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument("--steps", type=int, default=20_000, help="total env steps, warm-up included")
    p.add_argument("--warmup", type=int, default=5_000, help="uniform-random steps before learning (learning_starts)")
    p.add_argument("--skip", type=int, default=500, help="steps after the warm-up left out of the rate (JIT compile)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--algo", choices=("sac", "crossq"), default="sac")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument(
        "--critic-hidden",
        default="",
        help="critic layer sizes, e.g. 256,256 (default: the algo's, SAC 256,256, CrossQ 1024,1024)",
    )
    p.add_argument("--device", default="cpu", help="JAX platform (sets JAX_PLATFORMS unless 'auto')")
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device != "auto":
        os.environ["JAX_PLATFORMS"] = args.device
    if args.steps <= args.warmup:
        print(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})", file=sys.stderr)
        return 2

    import gymnasium as gym
    import jax
    import numpy as np
    import sbx
    import stable_baselines3 as sb3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    class StepClock(BaseCallback):
        """(time, num_timesteps) at the first step at or past `mark`, and at the latest step."""

        def __init__(self, mark: int):
            super().__init__()
            self.mark = mark
            self.start: tuple[float, int] | None = None
            self.last: tuple[float, int] | None = None

        def _on_step(self) -> bool:
            now = (time.perf_counter(), self.num_timesteps)
            if self.start is None and self.num_timesteps >= self.mark:
                self.start = now
            self.last = now
            return True

    env = gym.make(args.env)
    env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    common = dict(
        learning_rate=args.lr,
        buffer_size=max(1_000_000, args.steps),
        learning_starts=args.warmup,
        batch_size=args.batch,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        ent_coef="auto",
        target_entropy="auto",  # -prod(action shape) = -|A|
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    critic = [int(h) for h in args.critic_hidden.split(",") if h.strip()]
    if args.algo == "sac":
        policy_kwargs = {"net_arch": {"pi": [256, 256], "qf": critic or [256, 256]}, "n_critics": 2}
        model = sbx.SAC("MlpPolicy", env, tau=0.005, policy_delay=1, policy_kwargs=policy_kwargs, **common)
    else:
        policy_kwargs = {"net_arch": {"pi": [256, 256], "qf": critic}} if critic else None
        model = sbx.CrossQ("MlpPolicy", env, policy_kwargs=policy_kwargs, **common)

    clock = StepClock(args.warmup + args.skip)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps, callback=clock, progress_bar=False)
    wall = time.perf_counter() - t0

    rate, measured = None, 0
    if clock.start is not None and clock.last is not None and clock.last[1] > clock.start[1]:
        measured = clock.last[1] - clock.start[1]
        rate = measured / (clock.last[0] - clock.start[0])
    returns = [float(info["r"]) for info in list(model.ep_info_buffer)[-10:]]
    result = {
        "peer": "sbx",
        "algo": args.algo,
        "env": args.env,
        "steps": int(model.num_timesteps),
        "warmup": args.warmup,
        "skip": args.skip,
        "steps_per_s_after_warmup": rate,
        "wall_s": wall,
        "measured_steps": measured,
        "last_returns_mean": float(np.mean(returns)) if returns else None,
        "episodes": len(model.ep_info_buffer),
        "settings": {
            "lr": args.lr,
            "batch": args.batch,
            "actor": model.policy.net_arch_pi,
            "critic": model.policy.net_arch_qf,
            "policy_delay": model.policy_delay,
            "buffer": common["buffer_size"],
            "jax_backend": jax.default_backend(),
        },
        "versions": {
            "sbx": sbx.__version__,
            "stable_baselines3": sb3.__version__,
            "gymnasium": gym.__version__,
            "jax": jax.__version__,
            "torch": torch.__version__,
        },
    }
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        shown = "n/a" if rate is None else f"{rate:.1f}"
        ret = "n/a" if not returns else f"{result['last_returns_mean']:.1f} over {len(returns)} episodes"
        print(
            f"SBX {args.algo} {args.env}: {shown} env steps/s after warm-up + {args.skip} "
            f"({measured} steps measured), wall {wall:.1f} s for {result['steps']} steps, "
            f"last returns {ret} [sbx {sbx.__version__}, jax {jax.__version__}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
