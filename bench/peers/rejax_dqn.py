"""Peer figure for sparseq's "seeds in one process" benchmark: rejax's pure-JAX DQN on
gymnax CartPole-v1, S seeds trained in one program (`jax.jit(jax.vmap(algo.train))(keys)`,
as rejax documents it), 1 env per seed, aggregate env steps per second.

Run it with the rejax bench venv's python, NOT the project's (see bench/peers/README.md):

    /work/bench-venv-rejax/bin/python bench/peers/rejax_dqn.py --seeds 8 --steps 20000 --json

Settings follow pipelines/dqn-cartpole.toml (with envs/classic.toml: 1 env): MLP 100-100
with relu, lecun-normal weights and zero biases, Adam lr 3e-4 (eps 1e-8), no gradient
clipping, batch 32, buffer 10_000, 1_000 uniform-random steps before the first gradient
step, one gradient step per env step, vanilla (not double) DQN targets, gamma 0.99, hard
target update every 200 env steps, epsilon 1.0 during warm-up then linear to 0.01 over
1_000 steps. What differs (rejax's loss is optax's halved l2, truncation at 500 steps is
treated as terminal, ...) is listed in the README.

Timing, like sparseq's `runner_timer` in bench/throughput.py (collect-only warm-up first,
untimed, then the learning steps timed): the 1_000 warm-up steps run first, in their own
vmapped `train` program; then `train(train_state=...)`, vmapped over the warmed-up states,
`--steps` more env steps per seed (each with its gradient step), is lowered and compiled
ahead of time (`.lower(states).compile()`, `compile_s`) and the compiled executable is
called `--repeats` times on the same states; `run_s` is the median of those calls (each
waited on with block_until_ready). rejax's evaluation callback (128 episodes every
`eval_freq` steps, inside the train program) is replaced by a no-op, with
`skip_initial_evaluation` and `eval_freq` equal to each program's length, so the timed
program is training only. A short evaluation of the trained agents runs afterwards,
untimed (`--eval-episodes`, 0 skips it).
"""

import argparse
import json
import os
import statistics
import sys
import time
from importlib import metadata

# sparseq's dqn-cartpole (pipelines/dqn-cartpole.toml, envs/classic.toml)
HIDDEN = (100, 100)
LEARNING_RATE = 3e-4
BATCH_SIZE = 32
BUFFER_SIZE = 10_000
WARMUP = 1_000
TARGET_PERIOD = 200
GAMMA = 0.99
EPS_START, EPS_END, EPS_DECAY_STEPS = 1.0, 0.01, 1_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=1, help="S: seeds trained at once (vmapped)")
    p.add_argument("--steps", type=int, default=20_000, help="timed env steps per seed, after the 1_000-step warm-up")
    p.add_argument("--env", default="CartPole-v1", help="gymnax env id")
    p.add_argument("--seed", type=int, default=0, help="first seed; the S keys are seed .. seed+S-1")
    p.add_argument("--repeats", type=int, default=1, help="timed calls of the compiled program (median)")
    p.add_argument("--eval-episodes", type=int, default=16, help="untimed evaluation episodes per seed after training")
    p.add_argument("--device", default="cpu", help="JAX platform (sets JAX_PLATFORMS unless 'auto')")
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    return p.parse_args(argv)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device != "auto":
        os.environ["JAX_PLATFORMS"] = args.device
    if args.steps < 1 or args.seeds < 1 or args.repeats < 1:
        print("--steps, --seeds and --repeats must be >= 1", file=sys.stderr)
        return 2

    import jax
    import numpy as np
    import optax
    from flax import linen as nn
    from rejax import DQN
    from rejax.evaluate import evaluate
    from rejax.networks import DiscreteQNetwork, EpsilonGreedyPolicy

    class DQNWarmupEpsilon(DQN):
        """rejax's DQN with sparseq's (Dopamine's) epsilon: eps_start until fill_buffer,
        then linear to eps_end over EPS_DECAY_STEPS env steps (of the global step count).
        Stock rejax decays from step 0 over exploration_fraction * total_timesteps, which
        would change between the warm-up and the learning programs; nothing else changes."""

        @property
        def epsilon_schedule(self):
            return optax.linear_schedule(
                self.eps_start, self.eps_end, EPS_DECAY_STEPS, transition_begin=self.fill_buffer
            )

    algo = DQNWarmupEpsilon.create(
        env=args.env,
        total_timesteps=args.steps,
        eval_freq=args.steps,  # one block of iterations, no evaluation in between
        skip_initial_evaluation=True,
        num_envs=1,
        num_epochs=1,  # gradient steps per iteration: one per env step with 1 env
        learning_rate=LEARNING_RATE,
        gamma=GAMMA,
        batch_size=BATCH_SIZE,
        buffer_size=BUFFER_SIZE,
        fill_buffer=WARMUP,
        target_update_freq=TARGET_PERIOD,
        polyak=0.0,  # hard copy
        ddqn=False,
        eps_start=EPS_START,
        eps_end=EPS_END,
    )
    # rejax's create_agent fixes hidden_layer_sizes=(64, 64) (agent_kwargs can't override
    # it) and defaults to swish: put in the 100-100 relu net. flax Dense = lecun normal,
    # zero bias, as sparseq's MLP.
    num_actions = algo.env.action_space(algo.env_params).n
    agent = EpsilonGreedyPolicy(DiscreteQNetwork)(hidden_layer_sizes=HIDDEN, action_dim=num_actions, activation=nn.relu)
    algo = algo.replace(agent=agent, eval_callback=lambda algo, ts, rng: ())

    keys = jax.numpy.stack([jax.random.PRNGKey(args.seed + i) for i in range(args.seeds)])

    # Warm-up, untimed: WARMUP uniform-random steps into the buffer, no gradient step
    # (rejax trains once global_step > fill_buffer).
    warm = algo.replace(total_timesteps=WARMUP, eval_freq=WARMUP)
    t0 = time.perf_counter()
    warmed, _ = jax.jit(jax.vmap(warm.train))(keys)
    jax.block_until_ready(warmed)
    warmup_s = time.perf_counter() - t0

    # The timed program: --steps learning env steps per seed from the warmed-up states.
    train = jax.jit(jax.vmap(lambda ts: algo.train(train_state=ts)))
    t0 = time.perf_counter()
    compiled = train.lower(warmed).compile()
    compile_s = time.perf_counter() - t0

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ts, _ = compiled(warmed)
        jax.block_until_ready(ts)
        times.append(time.perf_counter() - t0)
    run_s = statistics.median(times)
    per_seed = np.asarray(ts.global_step)
    assert (per_seed == WARMUP + args.steps).all(), (per_seed, WARMUP, args.steps)

    returns = None
    if args.eval_episodes > 0:

        def eval_one(ts, rng):
            act = algo.make_act(ts)  # rejax's evaluation policy: epsilon 0.005
            _lengths, rets = evaluate(
                act, rng, algo.env, algo.env_params, args.eval_episodes, algo.env_params.max_steps_in_episode
            )
            return rets.mean()

        eval_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 1)
        returns = [round(float(r), 1) for r in jax.jit(jax.vmap(eval_one))(ts, eval_keys)]

    result = {
        "peer": "rejax",
        "algo": "dqn",
        "env": args.env,
        "seeds": args.seeds,
        "steps": args.steps,
        "warmup_steps": WARMUP,
        "aggregate_steps_per_s": args.seeds * args.steps / run_s,
        "compile_s": compile_s,
        "run_s": run_s,
        "run_s_all": times,
        "warmup_s": warmup_s,
        "eval_returns_mean": returns,
        "backend": jax.default_backend(),
        "versions": {
            "python": sys.version.split()[0],
            **{d: _version(d) for d in ("rejax", "gymnax", "jax", "jaxlib", "flax", "optax", "numpy")},
        },
        "settings": {
            "hidden": list(HIDDEN),
            "activation": "relu",
            "learning_rate": LEARNING_RATE,
            "batch_size": BATCH_SIZE,
            "buffer_size": BUFFER_SIZE,
            "fill_buffer": WARMUP,
            "target_update_freq": TARGET_PERIOD,
            "polyak": 0.0,
            "ddqn": False,
            "gamma": GAMMA,
            "eps": [EPS_START, EPS_END, EPS_DECAY_STEPS],
            "num_envs": 1,
            "num_epochs": 1,
            "loss": "optax.l2_loss (0.5 * squared error)",
            "timing": "warm-up program untimed; learning program AOT lower/compile, then median of --repeats calls",
            "repeats": args.repeats,
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"rejax DQN {args.env}: S={args.seeds} x {args.steps} steps after {WARMUP} warm-up, "
            f"{result['aggregate_steps_per_s']:.0f} steps/s aggregate (run {run_s:.2f} s, compile {compile_s:.2f} s), "
            f"eval returns {returns}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
