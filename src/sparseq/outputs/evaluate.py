"""`sparseq evaluate`: episodes of a run's final policy or of an exported one.

    sparseq evaluate RUN_OR_EXPORT [--episodes N] [--epsilon E] [--seed S] [--num-envs N]

RUN_OR_EXPORT is a run folder (its final policy.eqx, evaluated with JAX) or an export
folder (manifest.json + weights.npz, evaluated with numpy/scipy through
`sparseq.outputs.policy`). The environment is the run's task with the run's envpool options,
stepped on the host; returns use raw rewards. Actions are greedy (epsilon 0.001 unless
given); an iS-QL policy draws one of its online heads per step, as in training.
Atari stacks are zero-padded at episode starts when the run did so (the default).

(Periodic evaluation during training is `sparseq.runs.periodic_eval`.)
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparseq.outputs.export import ExportError


def zero_pad(obs: np.ndarray, position: np.ndarray, stack: int) -> np.ndarray:
    """Zeroes stack slots of obs (N, S * c, ...) from before the episode start;
    position (N,) is the step of each observation in its episode."""
    channels = obs.shape[1] // stack
    lag = stack - 1 - np.arange(obs.shape[1]) // channels
    keep = lag[None, :] <= position[:, None]
    return np.where(keep.reshape(keep.shape + (1,) * (obs.ndim - 2)), obs, 0).astype(obs.dtype)


def _policy_from_export(folder: Path) -> tuple[Callable, dict]:
    from sparseq.outputs.policy import PolicyError, load_policy

    try:
        policy = load_policy(folder)
    except PolicyError as error:
        raise ExportError(str(error)) from None
    manifest = policy.manifest
    env = {
        "task_id": manifest["task_id"],
        "options": dict(manifest.get("env_options", {})),
        # S > 0: the first S - 1 stack slots of an episode are zeroed (Dopamine's padding).
        "zero_pad_stack": int(manifest.get("zero_pad_stack", 0)),
    }
    return lambda obs, epsilon, rng: policy.act(obs, epsilon=epsilon, rng=rng), env


def _policy_from_run(folder: Path) -> tuple[Callable, dict]:
    import equinox as eqx

    from sparseq.outputs.export import acting_heads, load_final_policy
    from sparseq.outputs.policy import greedy_actions
    from sparseq.stages.collect.options import env_options, zero_pad_stack

    final = load_final_policy(folder)
    config = final.config
    heads = np.asarray(acting_heads(int(final.meta["num_heads"])))
    values = eqx.filter_jit(lambda network, obs: network.batched(obs))

    def act(obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        return greedy_actions(np.asarray(values(final.network, obs)), heads, epsilon, rng)

    env = {
        "task_id": config.env.task_id,
        "options": dict(env_options(config.env)),
        "zero_pad_stack": zero_pad_stack(config.env),
    }
    return act, env


def run_episodes(
    act: Callable, env: dict, *, episodes: int, epsilon: float, seed: int, num_envs: int
) -> list[tuple[float, int]]:
    """(raw return, length) of the first `episodes` episodes to finish."""
    import envpool

    pool = envpool.make(env["task_id"], env_type="gymnasium", num_envs=num_envs, seed=seed, **env["options"])
    pad = env["zero_pad_stack"] > 0
    rng = np.random.default_rng(seed)
    obs, _ = pool.reset()
    returns = np.zeros(num_envs)
    position = np.zeros(num_envs, np.int64)
    needs_reset = np.zeros(num_envs, bool)
    finished: list[tuple[float, int]] = []
    while len(finished) < episodes:
        if pad:
            obs = zero_pad(obs, position, env["zero_pad_stack"])
        actions = np.asarray(act(obs, epsilon, rng), np.int32)
        obs, reward, terminated, truncated, info = pool.step(actions)
        raw = np.asarray(info.get("reward", reward), np.float64)
        # envpool's auto-reset step (after a done) starts the next episode: reward 0.
        returns = np.where(needs_reset, 0.0, returns + raw)
        position = np.where(needs_reset, 0, position + 1)
        done = (terminated | truncated) & ~needs_reset
        for e in np.nonzero(done)[0]:
            finished.append((float(returns[e]), int(position[e])))
        needs_reset = done
    pool.close()
    return finished[:episodes]


def main(args: list[str]) -> int:
    from sparseq.outputs.args import OneLineParser, UsageError

    parser = OneLineParser(prog="sparseq evaluate", description="Run episodes of a final or exported policy.")
    parser.add_argument("source", type=Path, metavar="RUN_OR_EXPORT")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to finish (10)")
    parser.add_argument("--epsilon", type=float, default=0.001, help="random-action probability (0.001)")
    parser.add_argument("--seed", type=int, default=12345, help="environment seed (12345)")
    parser.add_argument("--num-envs", type=int, default=1, help="environments stepped together (1)")
    try:
        options = parser.parse_args(args)
        if options.episodes < 1 or options.num_envs < 1:
            raise UsageError("sparseq evaluate: --episodes and --num-envs must be >= 1")
        source = options.source
        if (source / "manifest.json").exists():
            act, env = _policy_from_export(source)
        else:
            act, env = _policy_from_run(source)
        results = run_episodes(
            act, env, episodes=options.episodes, epsilon=options.epsilon, seed=options.seed, num_envs=options.num_envs
        )
    except (ExportError, UsageError) as error:
        print(f"sparseq: error: {error}", file=sys.stderr)
        return 2
    returns = [r for r, _ in results]
    summary = {
        "source": str(source),
        "task_id": env["task_id"],
        "episodes": len(results),
        "epsilon": options.epsilon,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean([n for _, n in results])),
    }
    print(json.dumps(summary))
    return 0
