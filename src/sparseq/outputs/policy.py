"""Load and run an exported policy (`sparseq export`) with numpy and scipy only.

    from sparseq.outputs.policy import load_policy
    policy = load_policy("runs/my-run/export")
    actions = policy.act(obs)             # obs: (B, *obs_shape) -> (B,) greedy actions
    values = policy.q_values(obs)         # (B, H, A)

An exported actor (continuous control: `policy.continuous`, manifest "policy" is
"squashed_gaussian_actor") acts with its mean action squashed into the action bounds:

    actions = policy.act(obs)             # (B, A) float32: low + (tanh(mean) + 1) / 2 * (high - low)
    mean, log_std = policy.distribution(obs)   # (B, A) each, log_std unclipped

A Dict observation (DeepMind Control) may be passed as the dict envpool returns; it is
flattened in the manifest's `obs_keys` order, as in training.

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
ACTOR_POLICY = "squashed_gaussian_actor"


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
    """Greedy Q-policy, or deterministic squashed-Gaussian actor (`continuous`), over an
    exported network. See the module docstring."""

    def __init__(self, manifest: dict[str, Any], arrays: Any, sparse_backend: Callable | None = None):
        if manifest.get("format") != FORMAT:
            raise PolicyError(f"unknown export format {manifest.get('format')!r} (expected {FORMAT!r})")
        kind = manifest.get("policy")
        if kind not in (None, ACTOR_POLICY):
            raise PolicyError(f"unknown policy kind {kind!r} (this loader knows Q-networks and {ACTOR_POLICY!r})")
        self.manifest = manifest
        self.continuous = kind == ACTOR_POLICY
        self.obs_shape = tuple(manifest["obs_shape"])
        self.obs_keys = tuple(manifest.get("obs_keys", ()))
        self.input = manifest["input"]
        try:
            if self.continuous:
                self.action_dim = int(manifest["action_dim"])
                self.action_low = np.asarray(manifest["action_low"], np.float32)
                self.action_high = np.asarray(manifest["action_high"], np.float32)
                self.num_actions, self.num_heads = 0, 1
                self.acting_heads = np.zeros(1, np.int64)
            else:
                self.num_actions = int(manifest["num_actions"])
                self.num_heads = int(manifest["num_heads"])
                self.acting_heads = np.asarray(manifest["acting_heads"], dtype=np.int64)
        except KeyError as error:
            raise PolicyError(f"manifest lacks {error}") from None
        self.steps: list[Callable[[np.ndarray], np.ndarray]] = []
        for index, entry in enumerate(manifest["layers"]):
            self.steps.append(_flatten if entry["kind"] == "flatten" else Layer(entry, arrays, index, sparse_backend))

    def _prepare(self, obs: Any) -> np.ndarray:
        if isinstance(obs, dict):
            obs = flatten_obs(obs, self.obs_keys or tuple(obs))
        obs = np.asarray(obs)
        if obs.shape[1:] != self.obs_shape:
            raise PolicyError(f"observations must be (B, {', '.join(map(str, self.obs_shape))}), got {obs.shape}")
        if self.input == "pixels_255":
            return obs.astype(np.float32).transpose(1, 0, 2, 3) * np.float32(1 / 255)  # (C, B, H, W)
        return np.ascontiguousarray(obs.reshape(obs.shape[0], -1).astype(np.float32).T)  # (F, B)

    def outputs(self, obs: Any) -> np.ndarray:
        """obs: (B, *obs_shape) -> (B, outputs) float32 of the last layer."""
        x = self._prepare(obs)
        for step in self.steps:
            x = step(x)
        return x.T

    def q_values(self, obs: Any) -> np.ndarray:
        """obs: (B, *obs_shape) -> (B, H, A) float32 action values of every head."""
        if self.continuous:
            raise PolicyError("this export is a squashed-Gaussian actor, not a Q-network: use act or distribution")
        return self.outputs(obs).reshape(-1, self.num_heads, self.num_actions)

    def distribution(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Actor only. obs: (B, *obs_shape) -> (mean, log_std), (B, A) float32 each, of the
        pre-squash Gaussian (log_std before the learner's clipping)."""
        if not self.continuous:
            raise PolicyError("this export is a Q-network, not an actor: use act or q_values")
        out = self.outputs(obs)
        return out[:, : self.action_dim], out[:, self.action_dim :]

    def act(self, obs: Any, *, epsilon: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
        """obs: (B, *obs_shape) -> actions. Q-network: (B,) int64 epsilon-greedy actions;
        with several acting heads (iS-QL), each observation uses one drawn uniformly, as
        in training. Actor: (B, A) float32 mean actions squashed into the bounds, each
        replaced by a uniform action with probability epsilon (0: never)."""
        if self.continuous:
            mean, _ = self.distribution(obs)
            return squashed_actions(mean, self.action_low, self.action_high, epsilon, rng)
        return greedy_actions(self.q_values(obs), self.acting_heads, epsilon, rng)


def flatten_obs(obs: dict[str, Any], keys: tuple[str, ...]) -> np.ndarray:
    """A Dict observation batch -> (B, sum of key sizes) float32, keys in `keys` order
    (the collector's flattening)."""
    missing = [k for k in keys if k not in obs]
    if missing:
        raise PolicyError(f"observation lacks the keys {', '.join(missing)}")
    first = np.asarray(obs[keys[0]])
    return np.concatenate([np.asarray(obs[k]).reshape(first.shape[0], -1) for k in keys], axis=1).astype(np.float32)


def squashed_actions(
    mean: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    epsilon: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """mean: (B, A) pre-squash means -> (B, A) float32 `low + (tanh(mean) + 1) / 2 * (high - low)`
    (SACLearner.act_deterministic); with probability epsilon per row a uniform action."""
    low = np.asarray(low, np.float32)
    high = np.asarray(high, np.float32)
    actions = low + np.float32(0.5) * (np.tanh(np.asarray(mean, np.float32)) + np.float32(1.0)) * (high - low)
    if epsilon <= 0:
        return actions.astype(np.float32)
    if rng is None:
        rng = np.random.default_rng()
    explore = rng.random(actions.shape[0]) < epsilon
    uniform = rng.uniform(low, high, size=actions.shape).astype(np.float32)
    return np.where(explore[:, None], uniform, actions).astype(np.float32)


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
