"""Variants composed purely in pipeline files that no shipped file covers, and the
one-line errors for compositions that cannot work."""

import json

import pytest

from conftest import sparseq_cli

TINY = ["--run.total-steps", "3000", "--run.log-every", "1000", "--no-run.progress", "--replay.capacity", "1000"]
TINY += ["--learner.warmup", "200", "--network.hidden", "32", "32"]

ISDQN_POLYPRUNE = """# iS-DQN K=3 with gradual magnitude pruning: no shipped file has it
extends = "isdqn-cartpole"

[learner]
masked = true

[[operators]]
kind = "poly_prune"
start = 0.1
end = 0.6
final_sparsity = 0.5
every = 100

[[operators]]
kind = "shared_target_shift"
period = 200
"""

TFDQN_POLYPRUNE = """extends = "tfdqn-cartpole"

[learner]
masked = true

[[operators]]
kind = "poly_prune"
start = 0.1
end = 0.6
final_sparsity = 0.7
every = 100
"""


@pytest.mark.parametrize(("body", "final"), [(ISDQN_POLYPRUNE, 0.5), (TFDQN_POLYPRUNE, 0.7)])
def test_a_new_variant_from_a_file_trains_and_prunes(tmp_path, body, final):
    (tmp_path / "variant.toml").write_text(body)
    result = sparseq_cli(tmp_path, "train", "variant.toml", *TINY)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["sparsity/overall"] == pytest.approx(final, abs=0.01)
    assert all(r["train/loss"] == r["train/loss"] for r in records if "train/loss" in r)  # finite
    resolved = (run / "pipeline.toml").read_text()
    assert resolved.index('kind = "poly_prune"') < resolved.index("[learner]") or "[[operators]]" in resolved
    assert "enabled" not in resolved


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[[operators]]\nkind = "target_synk"\n',
            "operators.target_synk.kind = 'target_synk': unknown operator kind; did you mean 'target_sync'?",
        ),
        (
            '[[operators]]\nkind = "no_such_module:Op"\n',
            "operators.0.kind = 'no_such_module:Op': module 'no_such_module' not found",
        ),
        ('[[operators]]\nkind = "json:Nope"\n', "operators.0.kind = 'json:Nope': module 'json' has no 'Nope'"),
        ("[[operators]]\nperiod = 5\n", "operators.0 = {'period': 5}: needs a kind key"),
        ('[learner]\nkind = "deep"\n', "learner.kind = 'deep': unknown learner kind"),
        (
            '[[operators]]\nkind = "target_sync"\nperiodd = 5\n',
            "operators.target_sync.periodd = 5: unknown key; did you mean operators.target_sync.period?",
        ),
        ("[operators.target_sync]\nenabled = true\n", "operators.target_sync.enabled = True: operators are a list"),
        (
            '[learner]\npopulation = 3\nmasked = true\n[[operators]]\nkind = "prune_select"\n'
            '[[operators]]\nkind = "target_sync"\n',
            "operators.target_sync.kind = 'target_sync': a second operator for the target update: "
            "operator 0 (prune_select)",
        ),
        (
            '[learner]\nmasked = true\n[[operators]]\nkind = "target_sync"\n[[operators]]\nkind = "poly_prune"\n',
            "operators.poly_prune.kind = 'poly_prune': must come before operator 0 (target_sync)",
        ),
        (
            '[[operators]]\nkind = "target_sync"\n[[operators]]\nkind = "target_sync"\n',
            "operators.1.kind = 'target_sync': a second operator for the target update: operator 0 (target_sync)",
        ),
        (
            '[learner]\npopulation = 3\nmasked = true\n[[operators]]\nkind = "prune_select"\nnum_networks = 4\n',
            "operators.prune_select.kind = 'prune_select': the learner holds a population of 3",
        ),
        (
            '[learner]\npopulation = 3\n[[operators]]\nkind = "prune_select"\n',
            "operators.prune_select.kind = 'prune_select': the pruning selection needs a masked learner",
        ),
        ("operators = []\n", "learner.target = 'network': a separate target network needs an operator that updates it"),
    ],
)
def test_bad_compositions_are_one_line_errors(tmp_path, body, expected):
    (tmp_path / "bad.toml").write_text(body)
    result = sparseq_cli(tmp_path, "train", "bad.toml", *TINY)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparseq: error: bad.toml: "), result.stderr[-2000:]
    assert expected in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written for a pipeline that cannot run


def test_no_shipped_pipeline_toggles_operators():
    from conftest import REPO

    for path in (REPO / "pipelines").glob("*.toml"):
        text = path.read_text()
        assert "enabled" not in text and "[operators." not in text, path.name
