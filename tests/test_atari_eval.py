"""Evaluation episodes between training chunks (own pool, own epsilon), reported as
eval/* next to the training returns, without changing training; and the
`sparseq evaluate` command on a finished run. CartPole keeps it fast; Atari runs
the same code."""

import json

import jax
import numpy as np
import pytest

from conftest import small_config
from sparseq.runs.periodic_eval import Evaluator
from sparseq.runs.runner import train


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same small CartPole run with and without evaluation."""
    out = tmp_path_factory.mktemp("runs")
    with_eval = train(small_config(out, eval={"every": 200, "episodes": 2, "max_steps": 600}), name="with-eval")
    without = train(small_config(out), name="without-eval")
    return with_eval, without


def test_evaluation_is_logged_and_does_not_change_training(runs):
    with_eval, without = runs
    # Same seed, same training: evaluation uses its own pool and keys.
    for a, b in zip(leaves(with_eval.state.learner.online), leaves(without.state.learner.online), strict=True):
        np.testing.assert_array_equal(a, b)
    records = [json.loads(line) for line in (with_eval.folder / "metrics.jsonl").read_text().splitlines()]
    evaluated_at = [r["env_steps"] for r in records if "eval/episodes" in r]
    assert evaluated_at == [200, 400]
    for record in records:
        if "eval/episodes" in record:
            assert 1 <= record["eval/episodes"] <= 2 and record["eval/return_mean"] > 0
            assert record["eval/agent_steps"] <= 600
            assert "train/episodes" in record  # training returns sit next to them
    assert not any("eval/episodes" in r for r in (without.folder / "metrics.jsonl").read_text().splitlines())
    assert (with_eval.folder / "returns.png").exists()


def test_evaluation_respects_the_step_cap_and_epsilon(make_config):
    config = make_config(eval={"every": 1, "episodes": 50, "max_steps": 60, "epsilon": 1.0})
    from sparseq.pipeline.config.build import build_pipeline

    pipeline = build_pipeline(config)
    state = pipeline.init(jax.random.key(0))
    evaluator = Evaluator(config, pipeline.learner)
    result = evaluator.run(state.learner, env_steps=1)
    assert result.agent_steps == 60
    assert all(length <= 60 for length in result.lengths)
    assert evaluator.next_due == 2
    record = result.record()
    assert record["eval/agent_steps"] == 60 and record["eval/episodes"] == len(result.returns)
    # Epsilon 1: uniformly random actions, whose CartPole episodes are short.
    assert len(result.returns) >= 1 and max(result.lengths) < 60


def test_evaluate_command_runs_a_finished_run(runs, run_cli):
    done = run_cli("evaluate", str(runs[0].folder), "--episodes", "2")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["task_id"] == "CartPole-v1" and summary["return_mean"] > 0
