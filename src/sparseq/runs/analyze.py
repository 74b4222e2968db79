"""`sparseq analyze RUN`: the network analyses over a finished (or stopped) run's checkpoints.

Each checkpoint kept in the run's checkpoint folder (run.keep_checkpoints of them; set
it higher, with run.checkpoint_every, for a longer series) is restored into the run's
pipeline, and its acting network is analysed on replay states drawn from the replay it
saved: srank, dormant neurons, per-layer sparsity and weight norms. Churn is measured
between consecutive checkpoints, on a probe drawn from the later one's replay (so it
spans checkpoint_every steps, not one target period as during training). Without a saved
replay (run.checkpoint_replay = false) only the weight analyses run.

Writes RUN/analysis/checkpoints.jsonl and RUN/analysis/checkpoints.png, and prints a table.
"""

import dataclasses
import json
import sys
from pathlib import Path

import jax

from sparseq.analysis.network import analyze_network, greedy_actions, policy_churn
from sparseq.analysis.options import ANALYSIS_METRICS, AnalysisConfig
from sparseq.outputs.args import OneLineParser, UsageError

OUT_FOLDER = "analysis"


def _restore(checkpointer, step: int, template):
    meta = checkpointer.read_meta(step)
    state, _ = checkpointer.restore(step, template, meta)
    return state, bool(meta.get("include_replay", True))


def analyze_run(run: Path, options: AnalysisConfig) -> tuple[Path, list[dict]]:
    """The run folder and one record per checkpoint: {step_unit: step, "analysis/...": value}."""
    from sparseq.analysis.features import AnalysisError, check_analysable
    from sparseq.pipeline.config.build import build_pipeline
    from sparseq.pipeline.config.loader import load_pipeline
    from sparseq.runs.analysis import Analyzer, acting_network
    from sparseq.runs.checkpoint import Checkpointer, CheckpointError
    from sparseq.runs.resume import checkpoints_of, find_run_folder
    from sparseq.runs.runner import initial_keys
    from sparseq.runs.seed_run import SeedRun, pack_of

    folder = find_run_folder(str(run))
    config, _, _ = load_pipeline(folder / "pipeline.toml")
    if config.run.seeds:
        raise UsageError(
            f"sparseq analyze: {folder}: a pack of seeds; analyse one: {folder}/seed-{config.run.seeds[0]}"
        )
    # A seed of a pack: the pack's checkpoints, this seed's slice of them.
    pack = pack_of(folder)
    saved = load_pipeline(pack / "pipeline.toml")[0] if pack is not None else config
    pipeline = build_pipeline(saved, source_of=lambda key: str(folder / "pipeline.toml"))
    seed_run = SeedRun(config, folder, saved.run.seeds.index(config.run.seed) if pack is not None else None)
    template = pipeline.init(initial_keys(saved))
    try:
        check_analysable(acting_network(seed_run.state_slice(template.learner)))
    except (AnalysisError, ValueError) as error:
        raise UsageError(f"sparseq analyze: {folder}: {error}") from None
    checkpoints = checkpoints_of(pack if pack is not None else folder, saved)
    checkpointer = Checkpointer(checkpoints, include_replay=saved.run.checkpoint_replay)
    steps = checkpointer.all_steps()
    if not steps:
        raise CheckpointError(f"{checkpointer.directory}: no checkpoint to analyse")
    analyzer = Analyzer(options, pipeline.member, config.run.seed, pipeline.steps_per_cycle)
    weights_only = [m for m in options.metrics if m in ("sparsity", "weight_norm")]
    records, previous = [], None
    try:
        for step in steps:
            state, has_replay = _restore(checkpointer, step, template)
            if pack is not None:  # this seed's slice (the pool's state has no seed axis)
                state = seed_run.state_slice(dataclasses.replace(state, collector=None))
            network = acting_network(state.learner)
            record = {pipeline.step_unit: step}
            if has_replay:
                record.update({k: float(v) for k, v in analyzer.run(state, step).items()})
                if "churn" in options.metrics:
                    probe = analyzer.sample(state.replay, jax.random.fold_in(analyzer.key, step))
                    if previous is not None:
                        before = greedy_actions(previous[1], probe)
                        record["analysis/churn"] = float(policy_churn(before, greedy_actions(network, probe)))
                        record["analysis/churn_steps"] = step - previous[0]
            else:
                values = analyze_network(network, None, weights_only)  # no states: the weights only
                record.update({k: float(v) for k, v in values.items()})
            previous = (step, network)
            records.append(record)
    finally:
        checkpointer.close()
    return folder, records


def _table(records: list[dict], step_unit: str) -> str:
    columns = ["analysis/srank", "analysis/dormant/overall", "analysis/churn", "analysis/sparsity/overall"]
    present = [c for c in columns if any(c in r for r in records)]
    header = f"{step_unit:>14} " + " ".join(f"{c.removeprefix('analysis/'):>18}" for c in present)
    rows = [header]
    for record in records:
        cells = []
        for column in present:
            value = record.get(column)
            cells.append(f"{'-':>18}" if value is None else f"{value:>18.4g}")
        rows.append(f"{record[step_unit]:>14,} " + " ".join(cells))
    return "\n".join(rows)


def main(args: list[str]) -> int:
    from sparseq.pipeline.config.errors import ConfigError
    from sparseq.runs.checkpoint import CheckpointError

    parser = OneLineParser(prog="sparseq analyze", description="Network analyses over a run's checkpoints.")
    parser.add_argument("run", type=Path, metavar="RUN")
    parser.add_argument("--states", type=int, default=2048, help="replay states per analysis (2048)")
    parser.add_argument("--delta", type=float, default=0.01, help="srank threshold (0.01)")
    parser.add_argument("--tau", type=float, default=0.025, help="dormant-neuron threshold (0.025; 0 = dead)")
    parser.add_argument(
        "--metrics", nargs="+", default=list(ANALYSIS_METRICS), help=f"of {', '.join(ANALYSIS_METRICS)} (all)"
    )
    try:
        parsed = parser.parse_args(args)
        options = AnalysisConfig(
            every=1, metrics=tuple(parsed.metrics), states=parsed.states, delta=parsed.delta, tau=parsed.tau
        )
        for key, ok, reason in options.rules():
            if not ok:
                raise UsageError(f"sparseq analyze: --{key} {getattr(options, key)!r}: {reason}")
        options = dataclasses.replace(options, churn_period=1)  # churn spans checkpoints here
        folder, records = analyze_run(parsed.run, options)
    except (UsageError, ConfigError, CheckpointError) as error:
        print(f"sparseq: error: {error}", file=sys.stderr)
        return 2
    from sparseq.outputs.analysis_plots import plot_analysis

    step_unit = next(iter(records[0]))
    out = folder / OUT_FOLDER
    out.mkdir(exist_ok=True)
    (out / "checkpoints.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    x_label = "gradient steps" if step_unit == "gradient_steps" else "environment steps"
    plot = plot_analysis(records, out / "checkpoints.png", f"{folder.name}: checkpoints", step_unit, x_label)
    print(_table(records, step_unit))
    print(f"analyses: {out / 'checkpoints.jsonl'}" + (f"; plot: {plot}" if plot else ""))
    return 0
