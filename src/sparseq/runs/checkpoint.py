"""Orbax checkpoints of the full training state.

Array leaves of the TrainState (networks, target, masks, optimizer and operator
states, replay, RNG key, counters) are saved as one flat dict through orbax; the
static structure is rebuilt from the run's resolved pipeline file, whose fresh initial
state also gives restore its abstract target. envpool's handle is process-specific and
is never saved: a resumed run re-creates the pool (see boundary.py).

orbax writes each step to a temporary folder and renames it when complete, so a save
killed at any point never replaces the last good checkpoint. Saves are written from
the state's own buffers and finished before training goes on. Large leaves (a replay's
frames) go to the "sliced" item (sliced_arrays.py), written and restored one slab at a
time, so a multi-GB replay is never copied whole to host memory.
"""

import json
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from sparseq.pipeline.compose import TrainState
from sparseq.pipeline.config.errors import CheckpointError

__all__ = ["CheckpointError", "Checkpointer", "write_json"]


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _saved_part(state: TrainState, include_replay: bool) -> Any:
    """The array leaves to save: everything but the envpool handle (and the replay
    when it is excluded)."""
    if getattr(state, "collector", None) is not None:
        state = eqx.tree_at(lambda s: s.collector.handle, state, None)
    if not include_replay:
        state = eqx.tree_at(lambda s: s.replay, state, None)
    return eqx.filter(state, eqx.is_array)


def _flatten(tree: Any) -> dict[str, Any]:
    leaves = jax.tree.leaves(tree)
    return {f"leaf_{i:05d}": jax.random.key_data(x) if _is_key(x) else x for i, x in enumerate(leaves)}


EXTRA_PREFIX = "extra__"


def _extra_shapes(extra: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    return {name: [list(value.shape), value.dtype.str] for name, value in extra.items()}


class Checkpointer:
    """Keeps the last `keep` checkpoints of a run under `directory`."""

    def __init__(self, directory: Path, *, keep: int = 3, include_replay: bool = True):
        import orbax.checkpoint as ocp

        self.directory = directory.absolute()
        self.include_replay = include_replay
        self._ocp = ocp
        from sparseq.runs import sliced_arrays

        self._sliced = sliced_arrays
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_names=("state", "meta", "sliced"),
        )

    def _where(self, step: int) -> Path:
        return self.directory / str(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(
        self, step: int, state: TrainState, meta: dict[str, Any], extra: dict[str, np.ndarray] | None = None
    ) -> None:
        """Saves `state` at `step` and returns once it is written: the next chunk
        donates (reuses) the state's buffers, and copying a multi-GB replay to host
        memory first would double the run's memory. A step that already exists is
        replaced. `extra`: host arrays the runner needs back (a stopped run's unlogged
        metrics and the actions since the pool boundary)."""
        ocp = self._ocp
        self.manager.wait_until_finished()
        extra = {name: np.asarray(value) for name, value in (extra or {}).items()}
        arrays = _flatten(_saved_part(state, self.include_replay))
        arrays.update({EXTRA_PREFIX + name: value for name, value in extra.items()})
        large = {name: value for name, value in arrays.items() if self._sliced.is_large(value)}
        small = {name: value for name, value in arrays.items() if name not in large}
        meta = {**meta, "extra_shapes": _extra_shapes(extra), "sliced": sorted(large)}
        if step in self.manager.all_steps():
            self.manager.delete(step)
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(small),
                meta=ocp.args.JsonSave({**meta, "include_replay": self.include_replay}),
                sliced=self._sliced.SlicedArraysSave(large),
            ),
        )
        self.manager.wait_until_finished()
        if not saved:
            warnings.warn(f"checkpoint at step {step} was not written", stacklevel=2)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def read_meta(self, step: int) -> dict[str, Any]:
        ocp = self._ocp
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            return dict(restored["meta"])
        except Exception as error:
            raise CheckpointError(f"{self._where(step)}: unreadable checkpoint ({_first_line(error)})") from None

    def restore(
        self, step: int, template: TrainState, meta: dict[str, Any]
    ) -> tuple[TrainState, dict[str, np.ndarray]]:
        """Restores `step` into the structure of `template` (a freshly initialised
        state of the same pipeline, whose envpool handle is kept); returns the state
        and the `extra` arrays saved with it. The template's large arrays (a replay)
        are donated: the restore fills their buffers in place."""
        ocp = self._ocp
        include_replay = bool(meta.get("include_replay", True))
        part = _saved_part(template, include_replay)
        leaves, treedef = jax.tree.flatten(part)
        flat = _flatten(part)
        sliced = set(meta.get("sliced", []))
        if not sliced <= set(flat):
            raise CheckpointError(f"{self._where(step)}: checkpoint does not match the pipeline's state")
        # Shapes and dtypes only: np.empty leaves pages untouched (no host copy).
        abstract = {name: np.empty(value.shape, value.dtype) for name, value in flat.items() if name not in sliced}
        extra_shapes = meta.get("extra_shapes", {})
        abstract.update(
            {EXTRA_PREFIX + name: np.empty(shape, np.dtype(dtype)) for name, (shape, dtype) in extra_shapes.items()}
        )
        items = {"state": ocp.args.StandardRestore(abstract)}
        if sliced:
            items["sliced"] = self._sliced.SlicedArraysRestore({name: flat[name] for name in sorted(sliced)})
        try:
            restored_items = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:
            raise CheckpointError(f"{self._where(step)}: unreadable checkpoint ({_first_line(error)})") from None
        restored = dict(restored_items["state"])
        if sliced:
            restored.update(restored_items["sliced"])
        if set(restored) != set(abstract) | sliced:
            raise CheckpointError(f"{self._where(step)}: checkpoint does not match the pipeline's state")
        new_leaves = []
        for i, old in enumerate(leaves):
            value = restored[f"leaf_{i:05d}"]
            if isinstance(value, jax.Array) and f"leaf_{i:05d}" in sliced:
                new_leaves.append(value)  # already on device, in the template's buffer
                continue
            value = np.asarray(value)
            if _is_key(old):
                new_leaves.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(old)))
            else:
                if value.shape != old.shape:
                    raise CheckpointError(
                        f"{self._where(step)}: leaf {i} has shape {value.shape}, the pipeline needs {old.shape}"
                    )
                new_leaves.append(jax.numpy.asarray(value, dtype=old.dtype))
        loaded = jax.tree.unflatten(treedef, new_leaves)
        is_none = lambda x: x is None  # noqa: E731
        if getattr(template, "collector", None) is not None:
            handle = template.collector.handle
            loaded = eqx.tree_at(lambda s: s.collector.handle, loaded, handle, is_leaf=is_none)
        if not include_replay:
            loaded = eqx.tree_at(lambda s: s.replay, loaded, template.replay, is_leaf=is_none)
        extra = {name: np.asarray(restored[EXTRA_PREFIX + name]) for name in extra_shapes}
        return eqx.combine(loaded, template), extra

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes JSON atomically (temporary file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
