"""The README's own-operator example, run as a user would: its module and pipeline file
in a folder outside the package, trained through the CLI, then resumed."""

import json
import re

from conftest import REPO, sparseq_cli


def readme_block(language: str, first_line: str) -> str:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if b.startswith(first_line)]
    return block


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_readme_operator_runs_with_the_full_run_folder_and_resumes_exactly(tmp_path):
    (tmp_path / "my_ops.py").write_text(readme_block("python", "# my_ops.py"))
    (tmp_path / "weight-norm.toml").write_text(readme_block("toml", "# weight-norm.toml"))
    common = ["--run.log-every", "500", "--run.checkpoint-every", "1000", "--no-run.progress"]
    common += ["--replay.capacity", "1000", "--learner.warmup", "200", "--network.hidden", "16", "16"]
    straight = sparseq_cli(
        tmp_path, "train", "weight-norm.toml", "--run.name", "straight", "--run.total-steps", "2000", *common
    )
    assert straight.returncode == 0, straight.stderr[-2000:]
    (run,) = (tmp_path / "runs").glob("straight-*")
    records = metrics(run)
    assert all("weight_norm" in r and r["weight_norm"] > 0 for r in records)
    assert records[-1]["weight_norm_max"] >= records[0]["weight_norm_max"] > 0
    resolved = (run / "pipeline.toml").read_text()
    assert 'kind = "my_ops:WeightNormLogger"' in resolved and "every = 500" in resolved
    assert str(tmp_path) in resolved  # python_path: a rerun or resume finds the module

    # Half the run, then --resume to the full length: the same metrics line for line,
    # which needs the operator's state restored from the checkpoint.
    half = sparseq_cli(
        tmp_path, "train", "weight-norm.toml", "--run.name", "half", "--run.total-steps", "1000", *common
    )
    assert half.returncode == 0, half.stderr[-2000:]
    (resumed,) = (tmp_path / "runs").glob("half-*")
    again = sparseq_cli(tmp_path, "train", "--resume", str(resumed), "--run.total-steps", "2000")
    assert again.returncode == 0, again.stderr[-2000:]
    assert metrics(resumed) == records


def test_python_stages_take_dicts_and_a_foreign_pipeline_is_refused(make_config):
    import dataclasses

    import pytest

    from sparseq.pipeline.config.build import build_pipeline
    from sparseq.pipeline.config.errors import ConfigError
    from sparseq.pipeline.config.schema import Stage
    from sparseq.runs.runner import train
    from sparseq.stages.operators import TargetSync

    config = make_config(operators=[Stage("target_sync", period=50)])
    pipeline = build_pipeline(config)
    assert [type(op) for op in pipeline.operators] == [TargetSync] and pipeline.operators[0].period == 50
    runs = config.run.out_dir
    other = dataclasses.replace(pipeline, operators=(TargetSync(period=7),))
    with pytest.raises(ValueError, match="options differ"):
        train(config, pipeline=other)
    with pytest.raises(ValueError, match=r"pipeline\.operators are"):
        train(config, pipeline=dataclasses.replace(pipeline, operators=()))
    with pytest.raises(ConfigError, match=r"operators\.target_sync\.period = 'x': must be an integer"):
        train(make_config(operators=[Stage("target_sync", {"period": "x"})]))
    with pytest.raises(ConfigError, match=r"replay\.batch_size = 0: must be > 0"):
        train(make_config(replay={"batch_size": 0}))
    from pathlib import Path

    assert not Path(runs).exists()  # nothing written for a run that cannot start
