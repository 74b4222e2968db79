"""Load and run an exported policy (`sparseq export`) with numpy and scipy only.

    from sparseq.outputs.policy import load_policy
    policy = load_policy("runs/my-run/export")
    actions = policy.act(obs)             # obs: (B, *obs_shape) -> (B,) greedy actions
    values = policy.q_values(obs)         # (B, H, A)

This module imports nothing from the training code (no JAX, Equinox, config, run or
pipeline), so a deployed policy needs numpy, scipy and the two exported files.

Computation keeps activations feature-major, (features, B) for dense layers and
(C, B, H, W) for feature maps, so every layer is one `W @ X` with W in CSR (scipy's
sparse x dense kernel walks each stored weight once) or dense (BLAS). A convolution is
the CSR filter matrix (out, in * kh * kw) times the im2col patches (in * kh * kw, B * oh * ow).
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FORMAT = "sparseq-policy/1"


class PolicyError(Exception):
    """An unreadable export folder; the message is one line."""


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over axis 0 (the feature / channel axis). x: (F, ...)."""
    mean = x.mean(axis=0, keepdims=True)
    var = x.var(axis=0, keepdims=True)
    shape = (-1,) + (1,) * (x.ndim - 1)
    return (x - mean) / np.sqrt(var + eps) * weight.reshape(shape) + bias.reshape(shape)


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """x: (C, B, H, W) -> patches (C * kh * kw, B * oh * ow), oh, ow (no padding).

    Row order (c, i, j) matches a Conv2d weight (out, C, kh, kw) reshaped to (out, -1).
    """
    kh, kw = kernel
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, :: stride[0], :: stride[1]]  # (C, B, oh, ow, kh, kw)
    c, b, oh, ow = windows.shape[:4]
    return windows.transpose(0, 4, 5, 1, 2, 3).reshape(c * kh * kw, b * oh * ow), oh, ow


class Layer:
    """One exported Linear or Conv2d layer (plus optional LayerNorm and ReLU)."""

    def __init__(self, entry: dict[str, Any], arrays: Any, index: int, sparse_backend: Callable | None):
        self.kind = entry["kind"]
        self.shape = tuple(entry["shape"])
        self.stride = tuple(entry.get("stride", (1, 1)))
        self.activation = entry.get("activation")
        out_features = self.shape[0]
        if entry["format"] == "csr":
            if sparse_backend is None:
                raise PolicyError("this export stores CSR weights: scipy is needed to run it")
            data = arrays[f"{index}.data"].astype(np.float32)
            indices = arrays[f"{index}.indices"].astype(np.int32)
            indptr = arrays[f"{index}.indptr"].astype(np.int32)
            columns = int(np.prod(self.shape[1:]))
            self.weight = sparse_backend((data, indices, indptr), shape=(out_features, columns))
        else:
            self.weight = np.ascontiguousarray(arrays[f"{index}.weight"], dtype=np.float32)
        self.bias = arrays[f"{index}.bias"].astype(np.float32)[:, None]  # (out, 1)
        self.norm = None
        if f"{index}.ln_weight" in arrays:
            self.norm = (arrays[f"{index}.ln_weight"], arrays[f"{index}.ln_bias"], entry["layer_norm_eps"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """linear: (in, B) -> (out, B); conv2d: (C, B, H, W) -> (out, B, oh, ow)."""
        if self.kind == "conv2d":
            patches, oh, ow = im2col(x, self.shape[2:], self.stride)
            y = self.weight @ patches  # (out, B * oh * ow): csr_matrix @ ndarray is an ndarray
            y += self.bias
            y = y.reshape(self.shape[0], x.shape[1], oh, ow)
        else:
            y = self.weight @ x
            y += self.bias
        if self.norm is not None:
            y = _layer_norm(y, *self.norm)
        if self.activation == "relu":
            np.maximum(y, 0.0, out=y)
        return y


def _flatten(x: np.ndarray) -> np.ndarray:
    """(C, B, H, W) -> (C * H * W, B), the order of a per-example ravel of (C, H, W)."""
    c, b, h, w = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(c * h * w, b)


class SparsePolicy:
    """Greedy Q-policy over an exported network. See the module docstring."""

    def __init__(self, manifest: dict[str, Any], arrays: Any, sparse_backend: Callable | None = None):
        if manifest.get("format") != FORMAT:
            raise PolicyError(f"unknown export format {manifest.get('format')!r} (expected {FORMAT!r})")
        self.manifest = manifest
        self.obs_shape = tuple(manifest["obs_shape"])
        self.num_actions = int(manifest["num_actions"])
        self.num_heads = int(manifest["num_heads"])
        self.acting_heads = np.asarray(manifest["acting_heads"], dtype=np.int64)
        self.input = manifest["input"]
        self.steps: list[Callable[[np.ndarray], np.ndarray]] = []
        for index, entry in enumerate(manifest["layers"]):
            self.steps.append(_flatten if entry["kind"] == "flatten" else Layer(entry, arrays, index, sparse_backend))

    def _prepare(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.shape[1:] != self.obs_shape:
            raise PolicyError(f"observations must be (B, {', '.join(map(str, self.obs_shape))}), got {obs.shape}")
        if self.input == "pixels_255":
            return obs.astype(np.float32).transpose(1, 0, 2, 3) * np.float32(1 / 255)  # (C, B, H, W)
        return np.ascontiguousarray(obs.reshape(obs.shape[0], -1).astype(np.float32).T)  # (F, B)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """obs: (B, *obs_shape) -> (B, H, A) float32 action values of every head."""
        x = self._prepare(obs)
        for step in self.steps:
            x = step(x)
        return x.T.reshape(-1, self.num_heads, self.num_actions)

    def act(self, obs: np.ndarray, *, epsilon: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
        """obs: (B, *obs_shape) -> (B,) int64 epsilon-greedy actions. With several acting
        heads (iS-QL), each observation uses one drawn uniformly, as in training."""
        return greedy_actions(self.q_values(obs), self.acting_heads, epsilon, rng)


def greedy_actions(
    values: np.ndarray, heads: np.ndarray, epsilon: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray:
    """values: (B, H, A); heads: (K,) acting heads -> (B,) epsilon-greedy actions."""
    batch, _, num_actions = values.shape
    if rng is None:
        rng = np.random.default_rng()
    head = heads[0] if len(heads) == 1 else rng.choice(heads, size=batch)
    greedy = np.argmax(values[np.arange(batch), head], axis=-1)
    if epsilon <= 0:
        return greedy
    explore = rng.random(batch) < epsilon
    return np.where(explore, rng.integers(0, num_actions, size=batch), greedy)


def load_policy(folder: str | Path, *, sparse: bool = True) -> SparsePolicy:
    """Reads an export folder (manifest.json + weights.npz). `sparse=False` densifies
    CSR layers on load (for comparisons)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        with np.load(folder / "weights.npz") as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError as error:
        raise PolicyError(f"{folder}: not an exported policy ({Path(error.filename).name} missing)") from None
    except (json.JSONDecodeError, ValueError, OSError) as error:
        raise PolicyError(f"{folder}: unreadable export ({type(error).__name__})") from None
    try:
        from scipy.sparse import csr_matrix
    except ImportError:
        csr_matrix = None
    if not sparse:
        manifest, arrays = densify(manifest, arrays)
    return SparsePolicy(manifest, arrays, csr_matrix)


def densify(manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The same export with every CSR layer stored dense."""
    arrays = dict(arrays)
    layers = []
    for index, entry in enumerate(manifest["layers"]):
        entry = dict(entry)
        if entry.get("format") == "csr":
            data, indices, indptr = (arrays.pop(f"{index}.{k}") for k in ("data", "indices", "indptr"))
            rows = len(indptr) - 1
            matrix = np.zeros((rows, int(np.prod(entry["shape"][1:]))), np.float32)
            row_of = np.repeat(np.arange(rows), np.diff(indptr.astype(np.int64)))
            matrix[row_of, indices.astype(np.int64)] = data
            arrays[f"{index}.weight"] = matrix
            entry["format"] = "dense"
        layers.append(entry)
    return {**manifest, "layers": layers}, arrays
