"""Rendered evaluation videos (MP4) of MuJoCo and DeepMind Control tasks of envpool.

    result = record_episodes("HalfCheetah-v5", policy, Path("eval.mp4"), episodes=2)
    log_video_to_wandb(run, "eval/video", result)

Renderable tasks: envpool's MuJoCo gym tasks (`HalfCheetah-v5`, ...; also their v2-v4
ids) and DeepMind Control tasks (`CheetahRun-v1`, ...). envpool 1.2.5 renders them
itself (`render_mode="rgb_array"`, frame size set by the `render_width` /
`render_height` make options), but only once an OpenGL context is current in the
calling thread; we create one with `mujoco.GLContext` on the EGL backend
(`MUJOCO_GL=egl`, set unless the caller chose another; OSMesa is not installed here).
Other task families (Atari, classic control, ...) raise VideoUnavailable.

Cost: headless EGL here is Mesa llvmpipe (software), about 0.06-0.15 s a frame whatever
the size, so a 1000-step episode takes a few minutes; record few, short episodes.

mujoco, envpool, imageio_ffmpeg and wandb are imported inside the functions, so importing
this module is fast and pulls none of them.
"""

import dataclasses
import functools
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SIZE: tuple[int, int] = (240, 240)  # (width, height); envpool's own default is 480x480
DEFAULT_FPS = 30.0  # when the task's control rate cannot be read from its XML
# make options record_episodes sets itself; each has its own argument
_RESERVED_OPTIONS = {
    "num_envs": "always 1",
    "batch_size": "always 1",
    "env_type": "always gymnasium",
    "seed": "use seed=",
    "render_mode": "always rgb_array",
    "render_width": "use size=",
    "render_height": "use size=",
}


class VideoUnavailable(RuntimeError):
    """One-line reason rendering cannot work here (no GL backend, task not renderable)."""


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """What record_episodes wrote: `frames` frames at `fps` in one MP4 at `path`,
    and the undiscounted return of each episode (raw rewards), in play order."""

    path: Path
    frames: int
    episode_returns: list[float]
    fps: float


def renderable(task_id: str) -> bool:
    """True for envpool's MuJoCo gym tasks and DeepMind Control tasks (the families this
    module renders); False for other families and for unknown ids."""
    # Imported here: this module must import without jax (sparseq.stages pulls it in).
    from sparseq.stages.collect.tasks import is_mujoco_task

    return is_mujoco_task(task_id)


def record_episodes(
    task_id: str,
    policy: Callable[[np.ndarray], np.ndarray],
    path: Path,
    *,
    episodes: int = 1,
    max_steps: int = 1000,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    env_options: dict[str, Any] | None = None,
    fps: float | None = None,
) -> VideoResult:
    """Plays `episodes` episodes of `task_id` with `policy`, renders a frame after every
    step and writes all frames, episode after episode, to one MP4 at `path`.

    policy: observation batch (1, *obs_shape) as the env returns it (float64 for MuJoCo);
        a Dict observation (DMC) comes flattened to float32 (1, sum of key sizes), keys in
        `observation_space.spaces` order -> actions (1, A), cast to float64 for envpool.
    episodes: each ends at termination, truncation or after `max_steps` steps.
    size: (width, height) of the frames, both even (the H.264 yuv420p encoder needs it).
    env_options: further `envpool.make` options (e.g. `render_camera_id`, `max_episode_steps`).
    fps: playback rate; default the task's control rate (1 / (XML timestep * frame_skip),
        HalfCheetah-v5: 20, CheetahRun-v1: 100), else 30.

    Raises VideoUnavailable (one-line message) when the task is not renderable or no
    OpenGL backend works here; ValueError on bad arguments. Writes nothing in either case.
    """
    if not renderable(task_id):
        family = _family(task_id)
        what = "not an envpool task" if family is None else f"a {family} task"
        raise VideoUnavailable(f"{task_id} is {what}; videos are for MuJoCo and DeepMind Control tasks only")
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"size must be (width, height), both positive and even; got {size!r}")
    if episodes < 1 or max_steps < 1:
        raise ValueError(f"episodes and max_steps must be >= 1; got {episodes} and {max_steps}")
    options = dict(env_options or {})
    reserved = sorted(options.keys() & _RESERVED_OPTIONS.keys())
    if reserved:
        raise ValueError(f"env_options may not set {reserved[0]!r} ({_RESERVED_OPTIONS[reserved[0]]})")
    options.setdefault("num_threads", 1)  # one env: more threads only compete with llvmpipe's

    _ensure_gl_context(width, height)
    import envpool

    env = envpool.make(
        task_id,
        env_type="gymnasium",
        num_envs=1,
        seed=seed,
        render_mode="rgb_array",
        render_width=width,
        render_height=height,
        **options,
    )
    path = Path(path)
    writer = None
    try:
        fps = float(fps) if fps is not None else (_control_fps(task_id, env.config) or DEFAULT_FPS)
        action_shape = (1, *env.action_space.shape)
        returns: list[float] = []
        frames = 0
        for _ in range(episodes):
            obs, _info = env.reset()
            total = 0.0
            for _ in range(max_steps):
                action = np.asarray(policy(_flatten(obs, env.observation_space)), dtype=np.float64)
                if action.size != np.prod(action_shape):
                    raise ValueError(f"policy returned shape {action.shape}; {task_id} takes {action_shape}")
                obs, reward, terminated, truncated, _info = env.step(action.reshape(action_shape))
                total += float(reward[0])
                frame = _render(env, task_id, (height, width))
                if writer is None:  # opened after the first frame rendered, so a GL failure leaves no file
                    writer = _open_writer(path, (width, height), fps)
                writer.send(frame)
                frames += 1
                if terminated[0] or truncated[0]:
                    break
            returns.append(total)
    except BaseException:
        if writer is not None:
            writer.close()
            path.unlink(missing_ok=True)  # a partial video is worse than none
        raise
    finally:
        env.close()
    writer.close()  # flushes ffmpeg; the file is complete only after this
    return VideoResult(path=path, frames=frames, episode_returns=returns, fps=fps)


def log_video_to_wandb(run: Any, key: str, result: VideoResult) -> None:
    """Logs result's MP4 under `key` to an existing wandb run (`run.log`). A failure (no
    wandb, run finished, upload refused) warns once per process and is otherwise ignored:
    a video is never worth a crashed run."""
    try:
        import wandb

        run.log({key: wandb.Video(str(result.path), format="mp4")})
    except Exception as error:
        _warn_once(f"video {result.path} not logged to W&B ({_one_line(error)})")


# --- helpers ---------------------------------------------------------------------------


# Kept for the process: a GLContext freed while envpool still holds MuJoCo render
# contexts made in it would leave those dangling.
_gl_context: Any = None


def _family(task_id: str) -> str | None:
    from sparseq.stages.collect.tasks import task_family

    return task_family(task_id)


def _ensure_gl_context(width: int, height: int) -> None:
    """Makes an OpenGL context current in this thread (envpool's renderer needs one and
    does not create it on Linux), or raises VideoUnavailable."""
    global _gl_context
    os.environ.setdefault("MUJOCO_GL", "egl")  # must precede the first `import mujoco`
    backend = os.environ["MUJOCO_GL"]
    try:
        import mujoco

        if _gl_context is None:
            # envpool renders into its own offscreen buffer of the requested size, so
            # this context's size does not limit later, larger frames
            _gl_context = mujoco.GLContext(width, height)
        _gl_context.make_current()  # current per thread: redo on every call
    except Exception as error:
        _gl_context = None
        raise VideoUnavailable(
            f"no OpenGL backend for MuJoCo rendering (MUJOCO_GL={backend}): {_one_line(error)}"
        ) from None


def _render(env: Any, task_id: str, shape: tuple[int, int]) -> np.ndarray:
    """One frame (height, width, 3) uint8, C-contiguous for ffmpeg."""
    try:
        frame = env.render()
    except Exception as error:
        raise VideoUnavailable(f"{task_id} could not be rendered: {_one_line(error)}") from None
    frame = np.ascontiguousarray(frame[0], dtype=np.uint8)
    if frame.shape != (*shape, 3):
        raise VideoUnavailable(f"{task_id} rendered frames of shape {frame.shape}, expected {(*shape, 3)}")
    return frame


def _flatten(obs: Any, space: Any) -> np.ndarray:
    """Box observations pass as they are; Dict ones become (1, D) float32, keys in space order."""
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(obs[k]).reshape(1, -1) for k in space.spaces], axis=1).astype(np.float32)
    return obs


def _open_writer(path: Path, size: tuple[int, int], fps: float) -> Any:
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    # macro_block_size=2: any even size is encoded as given (the default 16 would rescale)
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, macro_block_size=2, ffmpeg_log_level="error")
    writer.send(None)  # starts the generator (and ffmpeg)
    return writer


def _control_fps(task_id: str, config: dict[str, Any]) -> float | None:
    """1 / (physics timestep * frame_skip): one frame per env step, played in real time.
    The timestep is read from the task's XML in envpool's assets; None when not found."""
    xml = _task_xml(task_id, config)
    if xml is None or "frame_skip" not in config:
        return None
    match = re.search(r"<option\b[^>]*\btimestep\s*=\s*\"([^\"]+)\"", xml.read_text(errors="replace"))
    timestep = float(match.group(1)) if match else 0.002  # MuJoCo's default timestep
    return round(1.0 / (timestep * int(config["frame_skip"])), 6)


def _task_xml(task_id: str, config: dict[str, Any]) -> Path | None:
    assets = Path(str(config.get("base_path", ""))) / "mujoco"
    family = _family(task_id)
    if family == "envpool.mujoco.gym" and config.get("xml_file"):
        xml = assets / "assets_gym" / str(config["xml_file"])
        return xml if xml.is_file() else None
    if family == "envpool.mujoco.dmc":
        import envpool.registration as registration

        # the spec class names the domain: DmcBallInCupEnvSpec -> ball_in_cup.xml
        domain = registration.registry.specs[task_id][1].removeprefix("Dmc").removesuffix("EnvSpec")
        return _dmc_xmls(str(assets / "assets_dmc")).get(domain.lower())
    return None


@functools.cache
def _dmc_xmls(folder: str) -> dict[str, Path]:
    """DMC domain XMLs by lower-cased name without underscores (ball_in_cup -> ballincup)."""
    return {p.stem.replace("_", "").lower(): p for p in Path(folder).glob("*.xml")}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


_wandb_warned = False


def _warn_once(message: str) -> None:
    global _wandb_warned
    if not _wandb_warned:
        _wandb_warned = True
        warnings.warn(message, stacklevel=3)
