"""`sparseq evaluate`: episodes of a run's final policy or of an exported one.

    sparseq evaluate RUN_OR_EXPORT [--episodes N] [--epsilon E] [--seed S] [--num-envs N]
                                   [--video [--video-steps N] [--video-episodes N] [--video-out PATH]]

RUN_OR_EXPORT is a run folder (its final policy.eqx, evaluated with JAX) or an export
folder (manifest.json + weights.npz, evaluated with numpy/scipy through
`sparseq.outputs.policy`). The environment is the run's task with the run's envpool options,
stepped on the host; returns use raw rewards. Q-policies act greedily (epsilon 0.001
unless given); an iS-QL policy draws one of its online heads per step, as in training.
A squashed-Gaussian actor (SAC) plays its mean action in the bounds (epsilon 0 unless
given: then uniform actions with that probability), as periodic evaluation does.
Atari stacks are zero-padded at episode starts when the run did so (the default).
Dict observations (DeepMind Control) are flattened in the run's key order.

--video also renders `--video-episodes` episodes (default 1) of at most `--video-steps`
steps (default 1000) to one MP4, by default RUN/videos/evaluate.mp4 (for an export
folder: the run folder it was exported from, else the export folder), with
`sparseq.outputs.video`: MuJoCo and DeepMind Control tasks only (another task is an
error before anything runs); when no OpenGL backend works it warns in one line and
still evaluates. Rendering is software here, about 0.1 s a frame.

(Periodic evaluation during training is `sparseq.runs.periodic_eval`.)
"""

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparseq.outputs.export import ExportError

VIDEO_FILE = Path("videos") / "evaluate.mp4"


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
    run_folder = Path(manifest.get("run_folder", ""))
    env = {
        "task_id": manifest["task_id"],
        "options": dict(manifest.get("env_options", {})),
        # S > 0: the first S - 1 stack slots of an episode are zeroed (Dopamine's padding).
        "zero_pad_stack": int(manifest.get("zero_pad_stack", 0)),
        "continuous": policy.continuous,
        "obs_keys": tuple(manifest.get("obs_keys", ())),
        "folder": run_folder if manifest.get("run_folder") and run_folder.is_dir() else folder,
    }

    def act(obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        try:
            return policy.act(obs, epsilon=epsilon, rng=rng)
        except PolicyError as error:
            raise ExportError(str(error)) from None

    return act, env


def _policy_from_run(folder: Path) -> tuple[Callable, dict]:
    import equinox as eqx
    import jax.numpy as jnp

    from sparseq.outputs.export import acting_heads, is_actor, load_final_policy
    from sparseq.outputs.policy import greedy_actions, squashed_actions
    from sparseq.stages.collect.options import env_options, zero_pad_stack

    final = load_final_policy(folder)
    config = final.config
    continuous = is_actor(final.meta)
    if continuous:
        low = np.asarray(final.meta["action_low"], np.float32)
        high = np.asarray(final.meta["action_high"], np.float32)
        means = eqx.filter_jit(lambda actor, obs: actor.batched(jnp.asarray(obs, jnp.float32))[0])

        def act(obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
            return squashed_actions(np.asarray(means(final.network, obs)), low, high, epsilon, rng)

    else:
        heads = np.asarray(acting_heads(int(final.meta["num_heads"])))
        values = eqx.filter_jit(lambda network, obs: network.batched(obs))

        def act(obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
            return greedy_actions(np.asarray(values(final.network, obs)), heads, epsilon, rng)

    env = {
        "task_id": config.env.task_id,
        "options": dict(env_options(config.env)),
        "zero_pad_stack": zero_pad_stack(config.env),
        "continuous": continuous,
        "obs_keys": tuple(final.meta.get("obs_keys", ())),
        "folder": folder,
    }
    return act, env


def _flat(obs, keys: tuple[str, ...]) -> np.ndarray:
    """A Dict observation batch as the (N, D) float32 array the policy takes."""
    if not isinstance(obs, dict):
        return obs
    from sparseq.outputs.policy import flatten_obs

    return flatten_obs(obs, keys or tuple(obs))


def run_episodes(
    act: Callable, env: dict, *, episodes: int, epsilon: float, seed: int, num_envs: int
) -> list[tuple[float, int]]:
    """(raw return, length) of the first `episodes` episodes to finish."""
    import envpool

    pool = envpool.make(env["task_id"], env_type="gymnasium", num_envs=num_envs, seed=seed, **env["options"])
    pad = env["zero_pad_stack"] > 0
    # A Dict observation is flattened in the run's key order (the collector's: the space's).
    keys = tuple(env.get("obs_keys", ())) or tuple(getattr(pool.observation_space, "spaces", ()))
    continuous = bool(env.get("continuous"))
    # Continuous actions go to envpool in its own dtype (float64 for MuJoCo), shape (N, A).
    action_dtype = np.dtype(pool.action_space.dtype) if continuous else np.dtype(np.int32)
    action_shape = (num_envs, *pool.action_space.shape)
    rng = np.random.default_rng(seed)
    obs, _ = pool.reset()
    returns = np.zeros(num_envs)
    position = np.zeros(num_envs, np.int64)
    needs_reset = np.zeros(num_envs, bool)
    finished: list[tuple[float, int]] = []
    try:
        while len(finished) < episodes:
            obs = _flat(obs, keys)
            if pad:
                obs = zero_pad(obs, position, env["zero_pad_stack"])
            actions = np.asarray(act(obs, epsilon, rng), action_dtype)
            if continuous and actions.shape != action_shape:
                raise ExportError(f"the policy gives actions {actions.shape}; {env['task_id']} takes {action_shape}")
            obs, reward, terminated, truncated, info = pool.step(actions)
            raw = np.asarray(info.get("reward", reward), np.float64)
            # envpool's auto-reset step (after a done) starts the next episode: reward 0.
            returns = np.where(needs_reset, 0.0, returns + raw)
            position = np.where(needs_reset, 0, position + 1)
            done = (terminated | truncated) & ~needs_reset
            for e in np.nonzero(done)[0]:
                finished.append((float(returns[e]), int(position[e])))
            needs_reset = done
    finally:
        pool.close()
    return finished[:episodes]


def check_renderable(task_id: str) -> None:
    """ExportError (one line) unless `task_id` can be rendered to a video."""
    from sparseq.outputs.video import renderable

    if not renderable(task_id):
        raise ExportError(
            f"--video: {task_id} cannot be rendered; videos are for MuJoCo and DeepMind Control tasks only"
        )


def record_video(
    act: Callable, env: dict, path: Path, *, episodes: int, max_steps: int, epsilon: float, seed: int
) -> dict | None:
    """Renders episodes of `act` to `path`; what was written, or None after one warning
    line (stderr) when rendering cannot work here."""
    from sparseq.outputs.video import VideoUnavailable, record_episodes

    rng = np.random.default_rng(seed)
    try:
        result = record_episodes(
            env["task_id"],
            lambda obs: act(obs, epsilon, rng),
            path,
            episodes=episodes,
            max_steps=max_steps,
            seed=seed,
            env_options=env["options"],
        )
    except VideoUnavailable as error:
        print(f"sparseq: warning: no video: {error}", file=sys.stderr)
        return None
    except ValueError as error:
        raise ExportError(f"--video: {error}") from None
    return {
        "video": str(result.path),
        "video_frames": result.frames,
        "video_fps": result.fps,
        "video_returns": result.episode_returns,
    }


def main(args: list[str]) -> int:
    from sparseq.outputs.args import OneLineParser, UsageError

    parser = OneLineParser(prog="sparseq evaluate", description="Run episodes of a final or exported policy.")
    parser.add_argument("source", type=Path, metavar="RUN_OR_EXPORT")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to finish (10)")
    parser.add_argument(
        "--epsilon", type=float, default=None, help="random-action probability (0.001; 0 for continuous actions)"
    )
    parser.add_argument("--seed", type=int, default=12345, help="environment seed (12345)")
    parser.add_argument("--num-envs", type=int, default=1, help="environments stepped together (1)")
    parser.add_argument("--video", action="store_true", help="also record an MP4 (MuJoCo and DMC tasks)")
    parser.add_argument("--video-steps", type=int, default=1000, help="steps per video episode at most (1000)")
    parser.add_argument("--video-episodes", type=int, default=1, help="episodes in the video (1)")
    parser.add_argument(
        "--video-out", type=Path, default=None, help=f"video file (default: RUN/{VIDEO_FILE.as_posix()})"
    )
    try:
        options = parser.parse_args(args)
        if options.episodes < 1 or options.num_envs < 1:
            raise UsageError("sparseq evaluate: --episodes and --num-envs must be >= 1")
        if options.video and (options.video_steps < 1 or options.video_episodes < 1):
            raise UsageError("sparseq evaluate: --video-steps and --video-episodes must be >= 1")
        source = options.source
        if (source / "manifest.json").exists():
            act, env = _policy_from_export(source)
        else:
            act, env = _policy_from_run(source)
        if options.video:
            check_renderable(env["task_id"])  # before any episode: a wrong task costs nothing
        epsilon = options.epsilon if options.epsilon is not None else (0.0 if env["continuous"] else 0.001)
        results = run_episodes(
            act, env, episodes=options.episodes, epsilon=epsilon, seed=options.seed, num_envs=options.num_envs
        )
        video = None
        if options.video:
            path = options.video_out if options.video_out is not None else env["folder"] / VIDEO_FILE
            video = record_video(
                act,
                env,
                path,
                episodes=options.video_episodes,
                max_steps=options.video_steps,
                epsilon=epsilon,
                seed=options.seed,
            )
    except (ExportError, UsageError) as error:
        print(f"sparseq: error: {error}", file=sys.stderr)
        return 2
    returns = [r for r, _ in results]
    summary = {
        "source": str(source),
        "task_id": env["task_id"],
        "episodes": len(results),
        "epsilon": epsilon,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "length_mean": float(np.mean([n for _, n in results])),
        **(video or {}),
    }
    print(json.dumps(summary))
    return 0
