"""Seeds in one process (run.seeds): a pack of S seeds on one envpool pool trains each
seed as its separate single-seed run does (same actions, same episodes, losses equal up
to float reassociation under vmap), for every learner family; every seed gets a run
folder of its own; the pack resumes exactly; bad input is one line."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests.conftest import cli_env
from tests.test_resume import SIGNAL_FLAGS, _final_arrays, _sparseq

from sparseq.pipeline.config.build import build_pipeline, seed_config
from sparseq.pipeline.config.loader import load_pipeline

SMALL = ["--network.hidden", "32", "32", "--replay.capacity", "4000", "--learner.warmup", "200"]


def _scan(pipeline, state, steps: int):
    cycles = steps // pipeline.steps_per_cycle
    return eqx.filter_jit(lambda s: jax.lax.scan(pipeline.step, s, None, length=cycles))(state)


def _pack_and_singles(name: str, seeds: tuple[int, ...], steps: int, overrides: list[str]):
    config, _, _ = load_pipeline(name, [*overrides, "--run.seeds", *map(str, seeds)])
    pack = build_pipeline(config)
    _, packed = _scan(pack, pack.init(jnp.stack([jax.random.key(s) for s in seeds])), steps)
    singles = []
    for seed in seeds:
        single = build_pipeline(seed_config(config, seed))
        singles.append(_scan(single, single.init(jax.random.key(seed)), steps)[1])
    return jax.device_get(packed), jax.device_get(singles)


@pytest.mark.parametrize(
    ("name", "seeds", "steps", "extra"),
    [
        ("dqn-cartpole", (0, 1, 2), 3_000, []),  # the acceptance case: S = 3
        ("isdqn-cartpole", (3, 7), 1_500, []),  # iterated heads, shared-target shift
        ("eaudedqn-cartpole", (0, 5), 800, ["--exploration.member-start", "1.0"]),  # a population, pruning
        ("sac-hopper", (0, 1), 400, ["--learner.warmup", "200"]),  # continuous actions, actor and critic
    ],
)
def test_a_seed_of_a_pack_trains_as_its_separate_run(name, seeds, steps, extra):
    packed, singles = _pack_and_singles(name, seeds, steps, [*SMALL, *extra])
    assert packed["steps"].shape[1:] == (len(seeds),)
    continuous = packed["action"].dtype.kind == "f"
    for index, single in enumerate(singles):
        learned = single["updated"].astype(bool)
        assert learned.any() and np.abs(single["loss"][learned]).max() > 0
        if continuous:
            # The actor's actions agree to an ulp or two once learning starts (float
            # reassociation of the batched matmuls), and MuJoCo amplifies that: compare
            # the first 100 gradient steps.
            early = slice(0, int(np.argmax(learned)) + 100)
            np.testing.assert_allclose(packed["action"][early, index], single["action"][early], atol=1e-5)
            np.testing.assert_allclose(packed["episode_return"][early, index], single["episode_return"][early], 1e-4)
            np.testing.assert_allclose(packed["loss"][early, index], single["loss"][early], rtol=1e-4, atol=1e-5)
            continue
        # The losses differ in the last bit from the first gradient step on (the same
        # reassociation), so an action can flip where two Q-values all but tie, and the
        # episode goes its own way from there: compare the first 1,000 gradient steps.
        early = slice(0, int(np.argmax(learned)) + 1_000)
        np.testing.assert_array_equal(packed["action"][early, index], single["action"][early], f"seed {seeds[index]}")
        np.testing.assert_array_equal(packed["episode_return"][early, index], single["episode_return"][early])
        np.testing.assert_array_equal(packed["episode_done"][early, index], single["episode_done"][early])
        np.testing.assert_allclose(packed["loss"][early, index], single["loss"][early], rtol=1e-4, atol=1e-5)
    # The seeds are independent: their streams differ.
    assert not np.array_equal(packed["action"][:, 0], packed["action"][:, 1])


def _array_leaves(state) -> list[np.ndarray]:
    state = dataclasses.replace(state, collector=None)  # a pack's pool holds all seeds' envs
    leaves = jax.tree.leaves(eqx.filter(state, eqx.is_array))
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x) for x in leaves]


@pytest.mark.parametrize("name", ["dqn-cartpole", "isdqn-cartpole", "eaudedqn-cartpole", "sac-hopper"])
def test_a_pack_initialises_each_seed_as_its_single_run_bit_for_bit(name):
    seeds = (0, 5)
    config, _, _ = load_pipeline(name, [*SMALL, "--run.seeds", *map(str, seeds)])
    packed = _array_leaves(build_pipeline(config).init(jnp.stack([jax.random.key(s) for s in seeds])))
    for index, seed in enumerate(seeds):
        single = _array_leaves(build_pipeline(seed_config(config, seed)).init(jax.random.key(seed)))
        assert len(single) == len(packed)
        for leaf, (of_pack, alone) in enumerate(zip(packed, single)):
            np.testing.assert_array_equal(of_pack[index], alone, f"{name}: seed {seed}, leaf {leaf}")


TINY = [
    "--run.total-steps=1200",
    "--run.log-every=400",
    "--learner.warmup=200",
    "--replay.capacity=2000",
    "--network.hidden=32",
    "--no-run.progress",
    "--run.wandb.mode=disabled",
]


def test_a_pack_writes_a_run_folder_per_seed_that_report_reads(tmp_path, monkeypatch, capsys):
    from sparseq.cli import main

    monkeypatch.chdir(tmp_path)
    # A boundary at 600 (each seed's environments re-seeded as its single run's) and an
    # evaluation per seed, on a pool of its own.
    flags = [*TINY, "--run.checkpoint-every=600", "--eval.every=600", "--eval.episodes=2"]
    assert main(["train", "dqn-cartpole", "--run.name=pack", "--run.seeds", "4", "9", *flags]) == 0
    out = capsys.readouterr().out
    (pack,) = tmp_path.glob("runs/pack-*")
    assert "2 seeds in one process" in out and f"{pack.name}/seed-9" in out
    summary = json.loads((pack / "summary.json").read_text())
    assert summary["seeds"] == [4, 9] and summary["status"] == "finished" and summary["env_steps"] == 1200
    for seed in (4, 9):
        folder = pack / f"seed-{seed}"
        for name in ("metrics.jsonl", "episodes.csv", "summary.json", "pipeline.toml", "returns.png", "policy.eqx"):
            assert (folder / name).exists(), (seed, name)
        assert json.loads((folder / "summary.json").read_text())["seed"] == seed
        config, _, _ = load_pipeline(folder / "pipeline.toml")
        assert config.run.seed == seed and config.run.seeds == ()
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 4  # 400, 600 (a boundary), 800, 1200
    assert (pack / "seed-4" / "episodes.csv").read_text() != (pack / "seed-9" / "episodes.csv").read_text()
    # A seed of the pack is the separate run of that seed, to the episode and evaluation.
    assert main(["train", "dqn-cartpole", "--run.name=alone", "--run.seed", "9", *flags]) == 0
    (alone,) = tmp_path.glob("runs/alone-*")
    assert (alone / "episodes.csv").read_text() == (pack / "seed-9" / "episodes.csv").read_text()
    evaluations = [
        [json.loads(line).get("eval/return_mean") for line in (folder / "metrics.jsonl").read_text().splitlines()]
        for folder in (alone, pack / "seed-9")
    ]
    assert evaluations[0] == evaluations[1] and evaluations[0][1] is not None
    # `sparseq analyze` reads a seed of a pack from the pack's checkpoints, as its run's.
    analyses = []
    for folder in (alone, pack / "seed-9"):
        assert main(["analyze", str(folder), "--states", "64", "--metrics", "srank", "sparsity"]) == 0
        lines = (folder / "analysis" / "checkpoints.jsonl").read_text().splitlines()
        analyses.append([json.loads(line) for line in lines])
    assert [r["env_steps"] for r in analyses[1]] == [600, 1200]
    for a, b in zip(*analyses):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-3) for k in a)
    shutil.rmtree(alone)
    capsys.readouterr()
    assert main(["report", str(pack), "--out", str(tmp_path / "report")]) == 0
    report = capsys.readouterr().out
    assert report.startswith("2 runs") and "seeds  2" in report, report
    # One seed of a pack does not resume alone.
    assert main(["train", "--resume", str(pack / "seed-9")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "one seed of the packed run" in error and f"--resume runs/{pack.name}" in error


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--run.seeds", "1", "2", "1"], "run.seeds = (1, 2, 1): seed 1 is given twice"),
        (["--run.seed", "3", "--run.seeds", "0", "1"], "replaces run.seed (3)"),
        (["--run.seeds", "0", "-1"], "run.seeds = (0, -1): must be >= 0"),
        (["--run.seeds", "0", "1", "--analysis.every", "400"], "[analysis] trains one seed per process"),
    ],
)
def test_bad_seeds_are_one_line(tmp_path, monkeypatch, capsys, args, expected):
    from sparseq.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "dqn-cartpole", *TINY, *args]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("sparseq: error:") and "\n" not in error and expected in error, error
    assert not (tmp_path / "runs").exists()


def test_a_diverging_pack_names_its_seeds_and_keeps_the_checkpoint(make_config):
    import optax

    from sparseq.runs.runner import NonFiniteError, train

    config = make_config(run={"total_steps": 800, "log_every": 100, "checkpoint_every": 200, "seeds": (0, 1)})
    pipeline = build_pipeline(config)
    poison = optax.scale_by_schedule(lambda count: jnp.where(count < 240, 1.0, jnp.nan))
    learner = dataclasses.replace(pipeline.member.learner, optimizer=optax.chain(optax.adam(1e-3), poison))
    poisoned = eqx.tree_at(lambda p: p.member.learner, pipeline, learner)
    folder = Path(config.run.out_dir) / "nan"
    with pytest.raises(NonFiniteError) as error:
        train(config, folder=folder, pipeline=poisoned)
    assert str(error.value) == (
        "non-finite loss at environment step 291 of seeds 0, 1 (stage: learner update); last good checkpoint: step 200"
    )
    for seed in (0, 1):
        assert json.loads((folder / f"seed-{seed}" / "summary.json").read_text())["status"] == "non-finite"
        assert len((folder / f"seed-{seed}" / "metrics.jsonl").read_text().splitlines()) == 2


def test_the_guard_names_the_one_seed_that_diverged(make_config):
    from sparseq.runs.runner import NonFiniteError, Trainer

    config = make_config(run={"seeds": (2, 5, 8)})
    trainer = Trainer(config, Path(config.run.out_dir) / "guard", build_pipeline(config))
    cycles = 4
    loss = np.ones((cycles, 3, 1), np.float32)
    loss[2:, 1] = np.nan
    metrics = {
        "loss": loss,
        "updated": np.ones((cycles, 3), bool),
        "steps": np.tile(np.arange(1, cycles + 1)[:, None] * 10, (1, 3)),
    }
    with pytest.raises(NonFiniteError, match=r"^non-finite loss at environment step 30 of seed 5 ") as error:
        trainer._guard(None, metrics)
    assert error.value.seeds == [5]


PACK = ["--run.seeds", "0", "1"]
# Seeds of 2 environments and 2 collection steps per cycle: the pool's order of the saved
# actions is not the seeds' order.
PACK_FLAGS = [*SIGNAL_FLAGS, *PACK, "--env.num-envs=2", "--learner.update-every=4", "--run.checkpoint-every=4000"]


def _start_pack(cwd: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sparseq.cli", "train", "dqn-cartpole", f"--run.name={name}", *PACK_FLAGS],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _after_the_boundary(cwd: Path, name: str, process: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if list(cwd.glob(f"checkpoints/{name}-*/4000")):
            return
        time.sleep(0.02)


def test_a_pack_killed_or_stopped_resumes_exactly(tmp_path):
    """SIGKILL after the boundary at 4000 (resumed from it), and SIGTERM between
    boundaries (the checkpoint keeps the actions since the boundary, in the pool's
    order, and a fresh pool steps through them; resumed from another working
    directory): every seed's outputs and the final state equal the straight run's."""
    straight = _sparseq(tmp_path, "train", "dqn-cartpole", "--run.name=straight", *PACK_FLAGS)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killing = _start_pack(tmp_path, "killed")
    _after_the_boundary(tmp_path, "killed", killing)
    os.killpg(killing.pid, signal.SIGKILL)
    killing.communicate(timeout=60)
    assert not list(tmp_path.glob("checkpoints/killed-*/8000")), "the run finished before it was killed"
    stopping = _start_pack(tmp_path, "stopped")
    _after_the_boundary(tmp_path, "stopped", stopping)
    time.sleep(0.3)  # a chunk or two past the boundary (chunks are 0.2 s)
    stopping.send_signal(signal.SIGTERM)
    _, stderr = stopping.communicate(timeout=120)
    assert stopping.returncode == 130, stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (reference,) = tmp_path.glob("runs/straight-*")
    for name, cwd in (("killed", tmp_path), ("stopped", elsewhere)):
        (folder,) = tmp_path.glob(f"runs/{name}-*")
        resumed = _sparseq(cwd, "train", "--resume", str(folder))
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        # A stop that lands on a boundary has no actions to step through.
        resumed_from = int(resumed.stderr.split(" from step ", 1)[1].split()[0].replace(",", ""))
        between = name == "stopped" and resumed_from % 4000 != 0
        assert ("stepping the environments through" in resumed.stderr) == between, resumed.stderr
        for seed in (0, 1):
            for file in ("metrics.jsonl", "episodes.csv"):
                assert (folder / f"seed-{seed}" / file).read_text() == (reference / f"seed-{seed}" / file).read_text()
            assert json.loads((folder / f"seed-{seed}" / "summary.json").read_text())["segments"] == 2
        a = _final_arrays(next(tmp_path.glob("checkpoints/straight-*")))
        b = _final_arrays(next(tmp_path.glob(f"checkpoints/{name}-*")))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
