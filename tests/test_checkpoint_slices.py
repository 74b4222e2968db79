"""Checkpoints of large leaves in slabs (sliced_arrays.py): exact round trips across
slab edges and dtypes, the template's buffers filled in place, atomic saves, and a run
whose replay goes through the sliced item resuming exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparseq.pipeline.config.build import build_pipeline
from sparseq.runs import sliced_arrays
from sparseq.runs.checkpoint import Checkpointer


@pytest.fixture
def small_slabs(monkeypatch):
    """Every array of 1 KB or more is "large", in chunks of 256 bytes (many slabs)."""
    monkeypatch.setattr(sliced_arrays, "LARGE_BYTES", 1024)
    monkeypatch.setattr(sliced_arrays, "CHUNK_BYTES", 256)
    monkeypatch.setattr(sliced_arrays, "SLAB_CHUNKS", 3)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((1001, 7, 3), np.uint8), ((5003,), np.float32), ((777, 2), np.int32), ((4099,), np.bool_)],
)
def test_array_round_trip_across_slab_edges(tmp_path, small_slabs, shape, dtype):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 200, shape).astype(dtype)
    values[: shape[0] // 3] = 0  # all-zero chunks are not stored and must read back as zeros
    sliced_arrays.write_array(tmp_path / "a", jnp.asarray(values))
    restored = sliced_arrays.read_array(tmp_path / "a", jnp.ones(shape, dtype))
    np.testing.assert_array_equal(np.asarray(restored), values)
    assert restored.dtype == dtype


def test_read_fills_the_given_buffer_in_place(tmp_path, small_slabs):
    values = jnp.arange(4000, dtype=jnp.float32)
    sliced_arrays.write_array(tmp_path / "a", values)
    into = jnp.zeros(4000, jnp.float32)
    pointer = into.unsafe_buffer_pointer()
    restored = sliced_arrays.read_array(tmp_path / "a", into)
    assert restored.unsafe_buffer_pointer() == pointer  # donated: no second copy of a replay
    assert into.is_deleted()
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(values))


def test_shape_mismatch_is_named(tmp_path, small_slabs):
    sliced_arrays.write_array(tmp_path / "a", jnp.zeros(4000, jnp.float32))
    with pytest.raises(ValueError, match=r"a: stored \(4000,\) float32, the pipeline needs \(4001,\)"):
        sliced_arrays.read_array(tmp_path / "a", jnp.zeros(4001, jnp.float32))


def _state(tmp_path):
    from conftest import small_config

    config = small_config(tmp_path / "runs", replay={"capacity": 600})
    pipeline = build_pipeline(config)
    return pipeline, pipeline.init(jax.random.key(0))


def _arrays(state):
    import equinox as eqx

    state = eqx.tree_at(lambda s: s.collector.handle, state, None)
    leaves = jax.tree.leaves(eqx.filter(state, eqx.is_array))
    return [
        np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x) for x in leaves
    ]


def _filled(state):
    """The state with a replay of distinct values (a fresh one is all zeros)."""
    import equinox as eqx

    obs = state.replay.obs
    return eqx.tree_at(lambda s: s.replay.obs, state, jnp.arange(obs.size, dtype=obs.dtype).reshape(obs.shape))


def test_checkpointer_round_trip_through_the_sliced_item(tmp_path, small_slabs):
    pipeline, state = _state(tmp_path)
    state = _filled(state)
    expected = _arrays(state)
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(10, state, {"cycle": 10})
    meta = checkpointer.read_meta(10)
    assert meta["sliced"], "the replay's observations should go to the sliced item"
    assert (tmp_path / "ckpt" / "10" / "sliced" / meta["sliced"][0]).is_dir()
    template = pipeline.init(jax.random.key(1))
    restored, _ = checkpointer.restore(10, template, meta)
    for got, want in zip(_arrays(restored), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    checkpointer.close()


def test_interrupted_sliced_save_keeps_the_last_good_checkpoint(tmp_path, small_slabs, monkeypatch):
    pipeline, state = _state(tmp_path)
    state = _filled(state)
    expected = _arrays(state)
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(10, state, {"cycle": 10})
    written = sliced_arrays.write_array

    def dies_midway(path, array):
        written(path, array[: array.shape[0] // 2])
        raise KeyboardInterrupt  # a kill in the middle of the replay's slabs

    monkeypatch.setattr(sliced_arrays, "write_array", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save(20, state, {"cycle": 20})
    monkeypatch.setattr(sliced_arrays, "write_array", written)
    reopened = Checkpointer(tmp_path / "ckpt")
    assert reopened.latest_step() == 10
    restored, _ = reopened.restore(10, pipeline.init(jax.random.key(1)), reopened.read_meta(10))
    for got, want in zip(_arrays(restored), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_resume_through_sliced_checkpoints_is_exact(tmp_path, small_slabs):
    """A run crossing several checkpoint boundaries, its replay in the sliced item,
    resumed from its first boundary, ends with the straight run's state."""
    import shutil

    from conftest import small_config
    from sparseq.runs.runner import resume, train

    config = small_config(
        tmp_path / "runs",
        run={"total_steps": 600, "checkpoint_every": 200, "keep_checkpoints": 5},
        replay={"capacity": 600},
    )
    straight = train(config, name="straight")
    checkpoints = tmp_path / "checkpoints" / straight.folder.name
    assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [200, 400, 600]
    copy, copy_checkpoints = tmp_path / "copy", tmp_path / "copy-checkpoints"
    shutil.copytree(straight.folder, copy)
    shutil.copytree(checkpoints, copy_checkpoints)
    for step in ("400", "600"):
        shutil.rmtree(copy_checkpoints / step)
    checkpointer = Checkpointer(copy_checkpoints)
    meta = checkpointer.read_meta(200)
    checkpointer.close()
    assert meta["sliced"]
    resumed = resume(config, copy, 200, meta, copy_checkpoints)
    for got, want in zip(_arrays(resumed.state), _arrays(straight.state), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (copy / "metrics.jsonl").read_text() == (straight.folder / "metrics.jsonl").read_text()
