"""W&B dashboards: how runs are grouped and tagged, their x-axis, and the report's run.

Training runs (sparseq.runs.log.WandbLog):
- group: `run.wandb.group` when set (a sweep sets it to the sweep's name), else the
  pipeline's name and task, e.g. `dqn-cartpole-CartPole-v1`. The pipeline's name is
  `run.name`, else the run folder's name without its time stamp and, for a seed of a
  pack, without `-seed-<s>`: reruns, resumed segments and every seed of a pack of one
  pipeline file on one task land in one group.
- tags: the algorithm, the task, `seed-<s>` and `learner-<kind>`.
- x-axis: the run's step counter (`env_steps`; `gradient_steps` offline), declared with
  `define_metric` and present in every logged row, images and videos included. The W&B
  `_step` is only a row counter (so a resumed run may re-log the steps after its
  checkpoint: rows are never dropped for a smaller step).

`sparseq report ... --wandb` (log_report): the report's tables (wandb.Table) and plots
(wandb.Image) in one run of job_type "report", grouped like the runs it covers (their
group when they share one, else "report"). Any failure is one warning line.

Only the standard library here; wandb is imported inside the functions.
"""

import json
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

STEP_UNITS = ("env_steps", "gradient_steps")
REPORT_GROUP = "report"  # the report run's group when its runs are in several
TAG_LIMIT = 64  # W&B's longest tag
GROUP_LIMIT = 128  # W&B's longest group name
PACK_FILE = "pack.json"  # in a seed folder of a pack (sparseq.runs.seed_run)

_STAMP = re.compile(r"-\d{8}-\d{6}(?:-\d+)?$")  # new_run_folder's `-YYYYmmdd-HHMMSS[-n]`
_SEED_SUFFIX = re.compile(r"[-_]seed[-_]?\d+$")


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name)
    return value if isinstance(value, Mapping) else {}


def pipeline_name(name: str, config: Mapping[str, Any]) -> str:
    """`run.name`, else the run's W&B name (its folder's name; `<pack>-seed-<s>` for a
    seed of a pack) without the seed and the time stamp."""
    base = str(_section(config, "run").get("name") or "") or name
    base = _STAMP.sub("", _SEED_SUFFIX.sub("", base))
    return base or name


def default_group(name: str, config: Mapping[str, Any]) -> str:
    """The W&B group of a run without `run.wandb.group`: pipeline name and task."""
    pipeline = pipeline_name(name, config)
    task = str(_section(config, "env").get("task_id") or "")
    group = f"{pipeline}-{task}" if task and task not in pipeline else pipeline
    return group[:GROUP_LIMIT]


def run_group(name: str, config: Mapping[str, Any]) -> str:
    """`run.wandb.group` when set, else default_group."""
    group = str(_section(_section(config, "run"), "wandb").get("group") or "")
    return group[:GROUP_LIMIT] if group else default_group(name, config)


def default_tags(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Algorithm, task id, `seed-<s>` and `learner-<kind>` (those the config has)."""
    run, learner = _section(config, "run"), _section(config, "learner")
    candidates = [
        config.get("algorithm"),
        _section(config, "env").get("task_id"),
        f"seed-{run['seed']}" if run.get("seed") is not None else None,
        f"learner-{learner['kind']}" if learner.get("kind") else None,
    ]
    return _unique_tags(candidates)


def _unique_tags(candidates: Iterable[Any]) -> tuple[str, ...]:
    tags: list[str] = []
    for tag in candidates:
        tag = str(tag or "")[:TAG_LIMIT]
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags)


def step_unit(config: Mapping[str, Any]) -> str:
    """The run's step counter: gradient steps for an offline (dataset) run."""
    dataset = _section(config, "dataset")
    return "gradient_steps" if dataset.get("offline") or dataset.get("path") else "env_steps"


def define_step_metric(run: Any, key: str) -> None:
    """Every metric of `run` plotted against `key` (its own `define_metric` first, so the
    glob does not claim it)."""
    run.define_metric(key)
    run.define_metric("*", step_metric=key)


# ----------------------------------------------------------------------------- the report's run


def folder_group(folder: Path) -> tuple[str, Mapping[str, Any]]:
    """(the W&B group, the [run.wandb] table) a run folder's W&B run had (pipeline.toml)."""
    try:
        with (folder / "pipeline.toml").open("rb") as handle:
            config = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        config = {}
    in_pack = (folder / PACK_FILE).exists()
    name = f"{folder.parent.name}-{folder.name}" if in_pack else folder.name
    return run_group(name, config), _section(_section(config, "run"), "wandb")


def report_group(folders: Sequence[Path]) -> tuple[str, str | None]:
    """(group, project) of the report's run: the runs' group when they share one, else
    "report"; their project when they share one, else None."""
    found = [folder_group(f) for f in folders]
    groups = {group for group, _ in found}
    projects = {str(w.get("project") or "") for _, w in found}
    group = groups.pop() if len(groups) == 1 else REPORT_GROUP
    project = projects.pop() if len(projects) == 1 else ""
    return group, project or None


def _cell(value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float) and value != value:
        return None
    return value


def table_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """(columns, data) of report.json entries: every key in order of first use; nested
    values as JSON text, missing ones None."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns, [[_cell(row.get(key)) for key in columns] for row in rows]


TABLES = ("per_algorithm", "per_task", "runs", "not_aggregated")


def log_report(
    result: Mapping[str, Any],
    out: Path,
    *,
    mode: str = "offline",
    project: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> str | None:
    """Logs `result` (report.json's content) and the plots in `out` to a new W&B run of
    job_type "report" (its files under out/wandb/). Returns a line saying where it went,
    or None after printing one warning line: a failure never fails the report."""
    try:
        import wandb

        folders = [Path(r["folder"]) for key in ("runs", "not_aggregated") for r in result.get(key, [])]
        group, runs_project = report_group(folders)
        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(
            project=project or runs_project or "sparseq",
            group=group,
            job_type="report",
            name=f"report-{group}",
            tags=_unique_tags(["report", *sorted({r.get("task_id") for r in result.get("runs", [])})]),
            dir=str(out),
            mode=mode,
            config=dict(config or {}),
            settings=wandb.Settings(init_timeout=30, console="off", x_disable_stats=True),
        )
        try:
            row: dict[str, Any] = {}
            for key in TABLES:
                if result.get(key):
                    columns, data = table_rows(result[key])
                    row[f"report/{key}"] = wandb.Table(columns=columns, data=data)
            for name in result.get("plots", []):
                if (out / name).exists():
                    row[f"plots/{Path(name).stem}"] = wandb.Image(str(out / name))
            run.log(row)
            where = getattr(getattr(run, "settings", None), "sync_dir", None) or out / "wandb"
            line = f"W&B report run {run.id} ({mode}, group {group})"
            line += f": wandb sync {where}" if mode == "offline" else ""
        finally:
            run.finish()
        return line
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"warning: W&B report not logged ({message}); the report files are written", file=sys.stderr)
        return None
