"""The README's Python composition example runs as written, and CI runs exactly the
README's test command."""

import re

import jax
import numpy as np

from conftest import REPO


def code_blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_python_composition_example_runs():
    blocks = [b for b in code_blocks("python") if "Pipeline(" in b]
    assert blocks, "README.md has no Python block composing a Pipeline"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    state, metrics, pipeline = namespace["state"], namespace["metrics"], namespace["pipeline"]
    steps = int(state.env_steps)
    assert steps > pipeline.learning_starts
    assert int(metrics["steps"][-1]) == steps
    # one gradient step per environment step from the cycle that reaches the warm-up
    assert pipeline.collector.num_envs == 1 and pipeline.update_every == 1
    assert int(state.learner.updates) == steps - pipeline.learning_starts + 1
    (sync,) = pipeline.operators
    assert int(np.sum(metrics["target_updated"])) == steps // sync.period
    done = np.asarray(metrics["episode_done"])
    assert done.sum() > 10 and np.asarray(metrics["episode_return"])[done].min() >= 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.learner.online))


def test_ci_runs_the_readme_test_command():
    commands = [line for b in code_blocks("bash") for line in b.splitlines() if "pytest" in line]
    assert len(commands) == 1, commands
    assert commands[0].strip() in (REPO / ".ci" / "run").read_text()


def test_learner_knobs_example_loads_and_builds(tmp_path):
    """The README's learner-knobs pipeline file is a valid pipeline with those knobs."""
    from sparseq.pipeline.config import load_pipeline
    from sparseq.pipeline.config.build import build_pipeline

    (block,) = [b for b in code_blocks("toml") if 'kind = "polyak"' in b]
    path = tmp_path / "knobs.toml"
    path.write_text(block)
    config = load_pipeline(str(path))[0]
    options = config.learner.options
    assert (options.double_q, options.optimizer, options.lr_schedule) == (True, "adamw", "cosine")
    assert [op.kind for op in config.operators] == ["polyak"]
    pipeline = build_pipeline(config)
    assert pipeline.operators[0].tau == 0.005
