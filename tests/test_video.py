"""Evaluation videos: envpool renders MuJoCo / DMC frames (EGL), ffmpeg writes an MP4.

Rendering here is software (llvmpipe, ~0.1 s a frame), so episodes are a few dozen steps
at 64x64; the whole file takes about 10 s.
"""

import subprocess
import sys
import warnings

import imageio_ffmpeg
import numpy as np
import pytest

from sparseq.outputs import video
from sparseq.outputs.video import VideoUnavailable, log_video_to_wandb, record_episodes, renderable

SIZE = (64, 48)  # (width, height): distinct, to catch a swapped axis


def decode(path):
    """(width, height) and frame count of an MP4, read back with ffmpeg."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    return tuple(meta["size"]), sum(1 for _ in reader)


@pytest.fixture(scope="module")
def cheetah(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "sub" / "cheetah.mp4"
    return record_episodes("HalfCheetah-v5", lambda obs: np.zeros((1, 6)), path, max_steps=30, size=SIZE)


def test_mujoco_episode_is_written_and_decodes(cheetah):
    assert cheetah.path.is_file() and cheetah.path.stat().st_size > 0
    assert cheetah.frames == 30
    assert len(cheetah.episode_returns) == 1 and np.isfinite(cheetah.episode_returns[0])
    assert cheetah.fps == 20.0  # timestep 0.01 * frame_skip 5
    assert decode(cheetah.path) == (SIZE, 30)


def test_dmc_renders_with_flattened_float32_observations(tmp_path):
    seen = []

    def policy(obs):
        seen.append((obs.shape, obs.dtype))
        return np.full((1, 6), 0.5, np.float32)  # float32 actions are cast for envpool

    result = record_episodes("CheetahRun-v1", policy, tmp_path / "dmc.mp4", episodes=2, max_steps=8, size=SIZE)
    assert set(seen) == {((1, 17), np.dtype(np.float32))}  # position (8,) + velocity (9,)
    assert (result.frames, len(result.episode_returns), result.fps) == (16, 2, 100.0)
    assert decode(result.path) == (SIZE, 16)


def test_renderable_families():
    assert renderable("HalfCheetah-v5") and renderable("CheetahRun-v1")
    assert not renderable("CartPole-v1") and not renderable("Pong-v5") and not renderable("NoSuchTask-v0")


def test_non_renderable_task_raises_one_line_reason(tmp_path):
    with pytest.raises(VideoUnavailable, match="CartPole-v1") as info:
        record_episodes("CartPole-v1", lambda obs: np.zeros((1, 1)), tmp_path / "x.mp4")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.mp4").exists()


def test_missing_gl_backend_raises_video_unavailable(tmp_path, monkeypatch):
    import mujoco

    def no_gl(width, height):
        raise RuntimeError("eglInitialize() failed\nsecond line")

    monkeypatch.setattr(video, "_gl_context", None)
    monkeypatch.setattr(mujoco, "GLContext", no_gl)
    with pytest.raises(VideoUnavailable, match="no OpenGL backend") as info:
        record_episodes("HalfCheetah-v5", lambda obs: np.zeros((1, 6)), tmp_path / "x.mp4", max_steps=2, size=SIZE)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x.mp4").exists()


def test_bad_arguments(tmp_path):
    zero = lambda obs: np.zeros((1, 6))  # noqa: E731
    with pytest.raises(ValueError, match="even"):
        record_episodes("HalfCheetah-v5", zero, tmp_path / "x.mp4", size=(63, 48))
    with pytest.raises(ValueError, match="size="):
        record_episodes("HalfCheetah-v5", zero, tmp_path / "x.mp4", env_options={"render_width": 10})
    with pytest.raises(ValueError, match="policy returned shape"):
        record_episodes("HalfCheetah-v5", lambda obs: np.zeros((1, 2)), tmp_path / "x.mp4", max_steps=2, size=SIZE)
    assert not (tmp_path / "x.mp4").exists()


def test_log_video_to_wandb_logs_once_and_warns_once(cheetah, monkeypatch):
    logged = []

    class Run:
        def log(self, data):
            logged.append(data)

    log_video_to_wandb(Run(), "eval/video", cheetah)
    [data] = logged
    assert list(data) == ["eval/video"] and type(data["eval/video"]).__name__ == "Video"

    class BrokenRun:
        def log(self, data):
            raise RuntimeError("run finished")

    monkeypatch.setattr(video, "_wandb_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            log_video_to_wandb(BrokenRun(), "eval/video", cheetah)
    assert len(caught) == 1 and "run finished" in str(caught[0].message)


def test_import_pulls_no_heavy_modules():
    code = (
        "import sys, sparseq.outputs.video; "
        "print([m for m in ('mujoco', 'envpool', 'imageio_ffmpeg', 'wandb', 'jax') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
