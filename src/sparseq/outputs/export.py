"""`sparseq export`: a run's final policy as compact sparse arrays plus a manifest.

    sparseq export RUN [--out PATH] [--layout auto|csr|dense]

Where the final policy comes from: at the end of every run the runner writes
`policy.eqx` (`eqx.tree_serialise_leaves` of the acting network: the target-selected
member for EauDeQN, the only member otherwise), `policy_masks.npz` (its masks, keyed by
the parameter's path in the network, when the run prunes) and `policy.json` (what is
needed to rebuild the network skeleton from pipeline.toml: observation shape, actions,
heads). `load_final_policy` reads them back; it is the one place to switch to the orbax
checkpoint when the run has one.

A continuous-control run (SAC and its variants) saves its ACTOR instead (`save_final_actor`:
the squashed-Gaussian policy, member 0, masks applied); its policy.json says
`"policy": "squashed_gaussian_actor"` and holds what rebuilds the actor (observation
shape and Dict keys, hidden sizes, action bounds). `save_run_policy` picks the right one
for a pipeline; runs whose learner has neither save nothing.

The exported folder (default RUN/export/) holds:
- manifest.json: format version, task and envpool options, observation shape/dtype,
  actions, heads and the heads the greedy policy acts with, and one entry per layer
  (kind, shape, stride, storage format, nonzeros, dense vs stored bytes).
  An actor's manifest has `"policy": "squashed_gaussian_actor"`, `"network": "actor"`,
  `action_dim`, `action_low` / `action_high`, `obs_keys` (the order a Dict observation
  is flattened in, [] for arrays) and `outputs` (the last layer's 2A rows: A means, then
  A log standard deviations), and no num_actions / num_heads / acting_heads: the
  deterministic action is `low + (tanh(mean) + 1) / 2 * (high - low)`.
- weights.npz: per layer `i`: `i.data`, `i.indices`, `i.indptr` (CSR) or `i.weight`
  (dense); `i.bias`; `i.ln_weight`, `i.ln_bias` when the layer has a LayerNorm.

Sparse form: every Linear weight (out, in) is stored as CSR over its rows; every Conv2d
weight (out, in, kh, kw) is stored as CSR of its (out, in * kh * kw) filter matrix, which
the loader applies to im2col patches (one sparse x dense matmul per layer). Column
indices use the smallest unsigned integer type that holds the column count (uint8 up
to 256 columns, uint16 up to 65,536: every layer of the MLP and the Nature CNN), row
pointers uint32.
`layout="auto"` stores a layer dense when CSR would not be smaller. Biases and
LayerNorm parameters (never pruned) are stored dense. Everything is float32.

`sparseq.outputs.policy.load_policy` reads the folder with numpy and scipy only.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import numpy as np

FORMAT = "sparseq-policy/1"
ACTOR_POLICY = "squashed_gaussian_actor"  # the "policy" of an actor's policy.json and manifest
POLICY_FILE = "policy.eqx"
MASKS_FILE = "policy_masks.npz"
META_FILE = "policy.json"
Layout = Literal["auto", "csr", "dense"]


class ExportError(Exception):
    """Bad input to export/evaluate; the message is one line."""


# ----------------------------------------------------------------------------- final policy


def _atomic_write(path: Path, write) -> None:
    """Writes through a temporary name so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as handle:  # a file handle: np.savez would append ".npz" to a name
        np.savez(handle, **arrays)


def save_final_policy(folder: Path, learner_state: Any, obs_shape: tuple[int, ...], num_actions: int) -> Path:
    """Writes the acting network (and its masks) of `learner_state` into the run folder."""
    member = int(learner_state.acting_member)

    def select(stacked: Any) -> Any:  # on the host: no XLA compilation per leaf at the end of a run
        return jax.tree.map(lambda x: np.asarray(x)[member] if eqx.is_array(x) else x, stacked)

    network = select(learner_state.online)
    _atomic_write(folder / POLICY_FILE, lambda p: eqx.tree_serialise_leaves(p, network))
    masks = None if learner_state.masks is None else select(learner_state.masks)
    _write_masks(folder, masks)
    meta = {
        "obs_shape": list(obs_shape),
        "num_actions": int(num_actions),
        "num_heads": int(network.head.num_heads),
        "acting_member": member,
        "masked": masks is not None,
    }
    # The meta file goes last: its presence marks a complete policy.
    _atomic_write(folder / META_FILE, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return folder / POLICY_FILE


def _write_masks(folder: Path, masks: Any) -> None:
    if masks is not None:
        flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(masks)}
        _atomic_write(folder / MASKS_FILE, lambda p: _save_npz(p, flat))
    elif (folder / MASKS_FILE).exists():
        (folder / MASKS_FILE).unlink()


def save_final_actor(
    folder: Path,
    actor_state: Any,
    *,
    obs_shape: tuple[int, ...],
    action_low: tuple[float, ...],
    action_high: tuple[float, ...],
    obs_keys: tuple[str, ...] = (),
    log_std_bounds: tuple[float, float] | None = None,
) -> Path:
    """Writes the actor (member 0 of `actor_state`, a ValueState, masks applied) of a
    continuous-control learner into the run folder."""

    def select(stacked: Any) -> Any:  # on the host, as in save_final_policy
        return jax.tree.map(lambda x: np.asarray(x)[0] if eqx.is_array(x) else x, stacked)

    actor = select(actor_state.online)
    masks = None if actor_state.masks is None else select(actor_state.masks)
    if masks is not None:
        from sparseq.stages.sparsity import apply_masks

        actor = apply_masks(actor, masks)  # numpy leaves: multiplied on the host
    _atomic_write(folder / POLICY_FILE, lambda p: eqx.tree_serialise_leaves(p, actor))
    _write_masks(folder, masks)
    low = [float(x) for x in action_low]
    high = [float(x) for x in action_high]
    if len(low) != actor.action_dim or len(high) != actor.action_dim:
        raise ValueError(f"action bounds of size {len(low)}/{len(high)} for an actor with {actor.action_dim} actions")
    meta = {
        "policy": ACTOR_POLICY,
        "network": "actor",
        "obs_shape": list(obs_shape),
        "obs_keys": list(obs_keys),
        "action_dim": int(actor.action_dim),
        "action_low": low,
        "action_high": high,
        "hidden": [int(layer.out_features) for layer in actor.torso.layers],
        "layer_norm": any(norm is not None for norm in actor.torso.norms),
        "acting_member": 0,
        "masked": masks is not None,
    }
    if log_std_bounds is not None:
        meta["log_std_min"], meta["log_std_max"] = (float(v) for v in log_std_bounds)
    _atomic_write(folder / META_FILE, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return folder / POLICY_FILE


def save_run_policy(folder: Path, pipeline: Any, learner_state: Any) -> Path | None:
    """Saves the final policy of a run: the acting Q-network of a learner with discrete
    actions (`num_actions`), the actor of one whose state holds an `actor` ValueState
    (SAC); None (nothing written) for other learners."""
    from sparseq.stages.learners.value_state import ValueState, has_value_state, value_state_of

    learner, collector = pipeline.learner, pipeline.data_spec
    if hasattr(learner, "num_actions") and has_value_state(learner_state):
        return save_final_policy(folder, value_state_of(learner_state), collector.obs_shape, learner.num_actions)
    actor = getattr(learner_state, "actor", None)
    if isinstance(actor, ValueState) and hasattr(learner, "action_low"):
        bounds = None
        if hasattr(learner, "log_std_min") and hasattr(learner, "log_std_max"):
            bounds = (learner.log_std_min, learner.log_std_max)
        return save_final_actor(
            folder,
            actor,
            obs_shape=tuple(collector.obs_shape),
            action_low=tuple(learner.action_low),
            action_high=tuple(learner.action_high),
            obs_keys=tuple(getattr(collector, "obs_keys", ())),
            log_std_bounds=bounds,
        )
    return None


def is_actor(meta: dict[str, Any]) -> bool:
    """True for the policy.json / manifest of a squashed-Gaussian actor."""
    return meta.get("policy") == ACTOR_POLICY


class FinalPolicy(eqx.Module):
    network: Any  # QNetwork (or GaussianActor when is_actor(meta)) with masks applied
    masks: dict[str, np.ndarray] | None  # parameter path -> 0/1 mask, None for dense runs
    meta: dict[str, Any] = eqx.field(static=True)
    config: Any = eqx.field(static=True)  # the run's PipelineConfig


def _read_config(folder: Path):
    from sparseq.pipeline.config import ConfigError, load_pipeline

    try:
        config, _, _ = load_pipeline(str(folder / "pipeline.toml"))
    except ConfigError as error:
        raise ExportError(str(error)) from None
    return config


def check_run_folder(folder: Path) -> None:
    if not folder.exists():
        raise ExportError(f"{folder}: no such run folder")
    if not folder.is_dir() or not (folder / "pipeline.toml").exists():
        raise ExportError(f"{folder}: not a run folder (no pipeline.toml)")


def load_final_policy(folder: Path) -> FinalPolicy:
    """The final acting network of a finished run, masks applied."""
    from sparseq.stages.networks.options import make_network_factory

    folder = Path(folder)
    check_run_folder(folder)
    if not (folder / POLICY_FILE).exists() or not (folder / META_FILE).exists():
        seeds = sorted(p.name for p in folder.glob("seed-*") if (p / "pipeline.toml").exists())
        if seeds:
            raise ExportError(f"{folder}: a pack of {len(seeds)} seeds; each has its policy: {folder / seeds[0]}, ...")
        raise ExportError(f"{folder}: no final policy ({POLICY_FILE}); the run did not finish or predates export")
    config = _read_config(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if is_actor(meta):
            make = _actor_factory(meta)
        else:
            shape, heads, actions = tuple(meta["obs_shape"]), int(meta["num_heads"]), int(meta["num_actions"])
            make = make_network_factory(config.network, shape, heads, actions)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ExportError(f"{folder / META_FILE}: unreadable ({type(error).__name__}: {error})") from None
    skeleton = eqx.filter_eval_shape(make, jax.random.key(0))  # shapes only, nothing computed
    try:
        network = eqx.tree_deserialise_leaves(folder / POLICY_FILE, skeleton)
    except Exception as error:  # a truncated or foreign file: say so in one line
        raise ExportError(f"{folder / POLICY_FILE}: unreadable ({type(error).__name__})") from None
    masks = None
    if meta.get("masked"):
        if not (folder / MASKS_FILE).exists():
            raise ExportError(f"{folder}: policy.json says masked but {MASKS_FILE} is missing")
        with np.load(folder / MASKS_FILE) as data:
            masks = {name: data[name] for name in data.files}
        network = apply_path_masks(network, masks)
    return FinalPolicy(network=network, masks=masks, meta=meta, config=config)


def _actor_factory(meta: dict[str, Any]):
    """key -> the GaussianActor skeleton that `meta` (an actor's policy.json) describes."""
    from sparseq.stages.networks.actor import GaussianActor

    features = int(np.prod(meta["obs_shape"]))
    hidden = tuple(int(h) for h in meta["hidden"])
    action_dim = int(meta["action_dim"])
    layer_norm = bool(meta.get("layer_norm", False))
    return lambda key: GaussianActor(features, hidden, action_dim, layer_norm=layer_norm, key=key)


def apply_path_masks(network: Any, masks: dict[str, np.ndarray]) -> Any:
    """Multiplies each parameter whose path is in `masks` by its mask."""
    paths = {jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(network)}
    unknown = sorted(set(masks) - paths)
    if unknown:
        raise ExportError(f"masks for parameters the network does not have: {', '.join(unknown)}")

    def apply(path, leaf):
        mask = masks.get(jax.tree_util.keystr(path))
        if mask is None:
            return leaf
        return jax.numpy.asarray(np.asarray(leaf) * mask.astype(leaf.dtype))  # host multiply: no compile

    return jax.tree_util.tree_map_with_path(apply, network)


# ----------------------------------------------------------------------------- sparse form


def index_dtype(columns: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if columns <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def to_csr(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense (rows, cols) -> CSR (data (nnz,) float32, indices (nnz,), indptr (rows + 1,) uint32)."""
    rows, cols = np.nonzero(matrix)  # row-major order, as CSR needs
    data = matrix[rows, cols].astype(np.float32)
    indptr = np.zeros(matrix.shape[0] + 1, dtype=np.uint32)
    np.cumsum(np.bincount(rows, minlength=matrix.shape[0]), out=indptr[1:])
    return data, cols.astype(index_dtype(matrix.shape[1])), indptr


def _weight_entry(index: int, weight: np.ndarray, layout: Layout, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Stores `weight` (out, ...) as CSR of its (out, prod(...)) matrix or dense."""
    matrix = weight.reshape(weight.shape[0], -1).astype(np.float32)
    dense_bytes = matrix.size * 4
    data, indices, indptr = to_csr(matrix)
    csr_bytes = data.nbytes + indices.nbytes + indptr.nbytes
    use_csr = layout == "csr" or (layout == "auto" and csr_bytes < dense_bytes)
    if use_csr:
        arrays[f"{index}.data"], arrays[f"{index}.indices"], arrays[f"{index}.indptr"] = data, indices, indptr
    else:
        arrays[f"{index}.weight"] = matrix
    return {
        "shape": list(weight.shape),
        "format": "csr" if use_csr else "dense",
        "nonzeros": len(data),
        "size": matrix.size,
        "sparsity": 1.0 - len(data) / matrix.size,
        "dense_bytes": dense_bytes,
        "stored_bytes": csr_bytes if use_csr else dense_bytes,
    }


def _add_layer(
    layers: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    name: str,
    layer: Any,
    norm: Any,
    activation: str | None,
    layout: Layout,
) -> None:
    index = len(layers)
    weight = np.asarray(layer.weight)
    entry: dict[str, Any] = {"name": name}
    if isinstance(layer, eqx.nn.Conv2d):
        if any(p != (0, 0) for p in layer.padding) or any(d != 1 for d in layer.dilation) or layer.groups != 1:
            raise ExportError(f"{name}: only unpadded, undilated, ungrouped convolutions can be exported")
        entry.update(kind="conv2d", stride=list(layer.stride))
    else:
        entry.update(kind="linear")
    entry.update(_weight_entry(index, weight, layout, arrays))
    arrays[f"{index}.bias"] = np.asarray(layer.bias, dtype=np.float32).reshape(-1)
    if norm is not None:
        arrays[f"{index}.ln_weight"] = np.asarray(norm.weight, dtype=np.float32)
        arrays[f"{index}.ln_bias"] = np.asarray(norm.bias, dtype=np.float32)
        entry["layer_norm_eps"] = float(norm.eps)
    entry["activation"] = activation
    layers.append(entry)


def network_layers(network: Any, layout: Layout = "auto") -> tuple[list[dict[str, Any]], dict[str, np.ndarray], str]:
    """A QNetwork or GaussianActor (one member, masks applied) -> (layer entries, arrays,
    input kind). An actor's last layer is its `out` Linear (2A rows: means, log stds)."""
    from sparseq.stages.networks import MLPTorso, NatureCNNTorso
    from sparseq.stages.networks.actor import GaussianActor

    torso = network.torso
    layers: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    if isinstance(torso, MLPTorso):
        for i, (layer, norm) in enumerate(zip(torso.layers, torso.norms)):
            _add_layer(layers, arrays, f"torso.layers[{i}]", layer, norm, "relu", layout)
        input_kind = "flat_float"
    elif isinstance(torso, NatureCNNTorso):
        for i, (conv, norm) in enumerate(zip(torso.convs, torso.conv_norms)):
            _add_layer(layers, arrays, f"torso.convs[{i}]", conv, norm, "relu", layout)
        layers.append({"name": "flatten", "kind": "flatten"})
        _add_layer(layers, arrays, "torso.dense", torso.dense, torso.dense_norm, "relu", layout)
        input_kind = "pixels_255"
    else:
        raise ExportError(f"export supports the mlp and nature_cnn torsos, not {type(torso).__name__}")
    if isinstance(network, GaussianActor):
        _add_layer(layers, arrays, "out", network.out, None, None, layout)
    else:
        _add_layer(layers, arrays, "head.linear", network.head.linear, None, None, layout)
    return layers, arrays, input_kind


def acting_heads(num_heads: int) -> list[int]:
    """Heads the greedy policy uses: the only head, or the online heads 1..H-1 of iS-QL
    (one drawn uniformly per step, as in training)."""
    return [0] if num_heads == 1 else list(range(1, num_heads))


def build_manifest(
    network: Any,
    *,
    obs_shape: tuple[int, ...],
    obs_dtype: str,
    num_actions: int,
    layout: Layout = "auto",
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    layers, arrays, input_kind = network_layers(network, layout)
    manifest = {
        "format": FORMAT,
        **(extra or {}),
        "obs_shape": list(obs_shape),
        "obs_dtype": obs_dtype,
        "input": input_kind,
        "num_actions": num_actions,
        "num_heads": network.head.num_heads,
        "acting_heads": acting_heads(network.head.num_heads),
        "layers": layers,
        "totals": _totals(layers, arrays),
    }
    return manifest, arrays


def _totals(layers: list[dict[str, Any]], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    weighted = [entry for entry in layers if "nonzeros" in entry]
    weight_keys = ("data", "indices", "indptr", "weight")
    other_bytes = sum(a.nbytes for k, a in arrays.items() if k.split(".", 1)[1] not in weight_keys)
    return {
        "weights": sum(e["size"] for e in weighted),
        "nonzeros": sum(e["nonzeros"] for e in weighted),
        "sparsity": 1.0 - sum(e["nonzeros"] for e in weighted) / sum(e["size"] for e in weighted),
        "dense_bytes": sum(e["dense_bytes"] for e in weighted) + other_bytes,
        "stored_bytes": sum(e["stored_bytes"] for e in weighted) + other_bytes,
    }


def build_actor_manifest(
    actor: Any,
    *,
    obs_shape: tuple[int, ...],
    action_low: tuple[float, ...] | list[float],
    action_high: tuple[float, ...] | list[float],
    obs_keys: tuple[str, ...] | list[str] = (),
    log_std_bounds: tuple[float, float] | None = None,
    layout: Layout = "auto",
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest and arrays of a squashed-Gaussian actor (one member, masks applied)."""
    layers, arrays, input_kind = network_layers(actor, layout)
    action_dim = int(actor.action_dim)
    if len(action_low) != action_dim or len(action_high) != action_dim:
        raise ExportError(f"action bounds of size {len(action_low)}/{len(action_high)} for {action_dim} actions")
    manifest = {
        "format": FORMAT,
        **(extra or {}),
        "policy": ACTOR_POLICY,
        "network": "actor",
        "obs_shape": list(obs_shape),
        "obs_dtype": "float32",
        "obs_keys": list(obs_keys),
        "input": input_kind,
        "action_dim": action_dim,
        "action_low": [float(x) for x in action_low],
        "action_high": [float(x) for x in action_high],
        "outputs": ["mean", "log_std"],
        "action": "low + (tanh(mean) + 1) / 2 * (high - low)",
    }
    if log_std_bounds is not None:
        manifest["log_std_min"], manifest["log_std_max"] = (float(v) for v in log_std_bounds)
    manifest.update(layers=layers, totals=_totals(layers, arrays))
    return manifest, arrays


def write_export(out: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "weights.npz", lambda p: _save_npz(p, arrays))
    _atomic_write(out / "manifest.json", lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))
    return out


def export_run(folder: Path, out: Path | None = None, layout: Layout = "auto") -> tuple[Path, dict[str, Any]]:
    """Exports the final policy of run `folder` to `out` (default folder/export)."""
    from sparseq.stages.collect.options import env_options, zero_pad_stack

    folder = Path(folder)
    policy = load_final_policy(folder)
    config = policy.config
    obs_dtype = "uint8" if config.network.kind != "mlp" else "float32"
    extra = {
        "algorithm": config.algorithm,
        "task_id": config.env.task_id,
        "env_options": dict(env_options(config.env)),
        # Atari: stack slots from before an episode start are zeroed (Dopamine) or copies.
        "stack_padding": config.env.atari.stack_padding,
        "zero_pad_stack": zero_pad_stack(config.env),
        "seed": config.run.seed,
        "run_folder": str(folder.resolve()),
        "acting_member": policy.meta.get("acting_member", 0),
    }
    meta = policy.meta
    if is_actor(meta):
        bounds = (meta["log_std_min"], meta["log_std_max"]) if "log_std_min" in meta else None
        manifest, arrays = build_actor_manifest(
            policy.network,
            obs_shape=tuple(meta["obs_shape"]),
            action_low=meta["action_low"],
            action_high=meta["action_high"],
            obs_keys=meta.get("obs_keys", ()),
            log_std_bounds=bounds,
            layout=layout,
            extra=extra,
        )
    else:
        manifest, arrays = build_manifest(
            policy.network,
            obs_shape=tuple(meta["obs_shape"]),
            obs_dtype=obs_dtype,
            num_actions=meta["num_actions"],
            layout=layout,
            extra=extra,
        )
    out = Path(out) if out is not None else folder / "export"
    return write_export(out, manifest, arrays), manifest


def main(args: list[str]) -> int:
    from sparseq.outputs.args import OneLineParser, UsageError

    parser = OneLineParser(prog="sparseq export", description="Export a run's final policy in sparse form.")
    parser.add_argument("run", type=Path, metavar="RUN")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/export)")
    parser.add_argument("--layout", choices=["auto", "csr", "dense"], default="auto", help="weight storage (auto)")
    try:
        options = parser.parse_args(args)
        out, manifest = export_run(options.run, options.out, options.layout)
    except (ExportError, UsageError) as error:
        print(f"sparseq: error: {error}", file=sys.stderr)
        return 2
    totals = manifest["totals"]
    print(f"exported {options.run} -> {out}")
    if is_actor(manifest):
        low, high = manifest["action_low"], manifest["action_high"]
        print(f"  policy: squashed Gaussian actor, {manifest['action_dim']} actions in [{min(low)}, {max(high)}]")
    for entry in manifest["layers"]:
        if "nonzeros" in entry:
            print(
                f"  {entry['name']:<18} {entry['kind']:<7} {'x'.join(map(str, entry['shape'])):<14} "
                f"{entry['format']:<5} nonzeros {entry['nonzeros']:>9,} ({100 * entry['sparsity']:5.1f}% sparse)  "
                f"{entry['stored_bytes']:>10,} B (dense {entry['dense_bytes']:,} B)"
            )
    print(
        f"  total: {totals['nonzeros']:,} of {totals['weights']:,} weights ({100 * totals['sparsity']:.1f}% sparse), "
        f"{totals['stored_bytes']:,} B stored vs {totals['dense_bytes']:,} B dense"
    )
    return 0
