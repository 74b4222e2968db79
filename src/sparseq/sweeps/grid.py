"""A sweep file's grid, expanded: one GridPoint per run, each with a readable,
deterministic id (its folder name) and its overrides as `sparseq train` flags.

Order: pipelines, then tasks, then the grid axes in file order, then seed chunks, so
the runs of one configuration sit next to each other in every listing.
"""

import dataclasses
import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

from sparseq.sweeps.flags import text, to_flag
from sparseq.sweeps.spec import TASK_KEY, SweepSpec

SAFE = re.compile(r"[^A-Za-z0-9.+-]+")
MAX_ID = 120  # ids beyond this get shortened with a hash: folder names stay usable


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One run of the sweep.

    assignments: what the sweep file sets for this run, key -> value, in precedence
    order (fixed overrides, then this point's axis values, task and seeds).
    """

    id: str
    pipeline: str  # as written in the sweep file
    pipeline_path: Path  # the resolved pipeline file
    task: str | None
    seeds: tuple[int, ...]  # (): the pipeline's own seed; several: one packed process
    axes: dict[str, Any]
    assignments: dict[str, Any]

    @property
    def packed(self) -> bool:
        return "run.seeds" in self.assignments

    def flags(self) -> list[str]:
        """The assignments as `sparseq train` flags (what load_pipeline parses)."""
        return [to_flag(key, value) for key, value in self.assignments.items()]

    def record(self) -> dict[str, Any]:
        """Its entry in sweep.json."""
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "pipeline_path": str(self.pipeline_path),
            "task": self.task,
            "seeds": list(self.seeds),
            "axes": self.axes,
            "assignments": self.assignments,
        }


def chunk_seeds(seeds: tuple[int, ...], per_process: int) -> list[tuple[int, ...]]:
    """Seeds in order, `per_process` to a process; the last chunk takes the rest."""
    return [tuple(seeds[i : i + per_process]) for i in range(0, len(seeds), per_process)]


def _tag_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(_tag_value(v) for v in value) or "none"
    if isinstance(value, float):
        value = format(value, ".12g")  # 1e12 as 1e+12, not 1000000000000.0
    return SAFE.sub("_", text(value)).strip("_") or "empty"


def _axis_labels(keys: list[str]) -> dict[str, str]:
    """The last part of each axis key (`replay.batch_size` -> batch_size), or the whole
    key where two axes share a last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (tail if last.count(tail) == 1 else k.replace(".", "-")) for k, tail in zip(keys, last)}


def _seed_tag(seeds: tuple[int, ...]) -> str:
    return "s" + "+".join(str(s) for s in seeds)


def _run_id(parts: list[str], assignments: dict[str, Any]) -> str:
    text = "_".join(SAFE.sub("_", p).strip("_") for p in parts if p)
    if len(text) > MAX_ID:
        text = f"{text[: MAX_ID - 9]}-{_digest(assignments)}"
    return text


def _digest(data: Any) -> str:
    return hashlib.sha1(repr(sorted(data.items())).encode()).hexdigest()[:8]


def expand(spec: SweepSpec, pipeline_paths: dict[str, Path]) -> list[GridPoint]:
    """Every grid point of `spec`; `pipeline_paths` maps each of spec.pipelines to its
    resolved file. Ids are unique: ids that would collide (two pipelines with one file
    name) get a hash of their assignments appended."""
    labels = _axis_labels(list(spec.grid))
    axis_values = list(itertools.product(*spec.grid.values())) if spec.grid else [()]
    tasks: list[str | None] = list(spec.tasks) or [None]
    chunks = chunk_seeds(spec.seeds, spec.seeds_per_process) if spec.seeds else [()]
    points = []
    for pipeline in spec.pipelines:
        path = pipeline_paths[pipeline]
        for task in tasks:
            for values in axis_values:
                axes = dict(zip(spec.grid, values))
                for seeds in chunks:
                    assignments = {**spec.overrides, **axes}
                    if task is not None:
                        assignments[TASK_KEY] = task
                    if len(seeds) == 1 and spec.seeds_per_process == 1:
                        assignments["run.seed"] = seeds[0]
                    elif seeds:  # a pack, even when the last chunk has one seed: one folder layout
                        assignments["run.seeds"] = list(seeds)
                    parts = [path.stem, task or "", *(f"{labels[k]}-{_tag_value(v)}" for k, v in axes.items())]
                    if seeds:
                        parts.append(_seed_tag(seeds))
                    point = GridPoint(_run_id(parts, assignments), pipeline, path, task, seeds, axes, assignments)
                    points.append(point)
    return _unique(points)


def _unique(points: list[GridPoint]) -> list[GridPoint]:
    ids = [p.id for p in points]
    twice = {i for i in ids if ids.count(i) > 1}
    if not twice:
        return points
    out = []
    for p in points:
        if p.id in twice:
            key = {"pipeline": str(p.pipeline_path), **p.assignments}
            p = dataclasses.replace(p, id=f"{p.id}-{_digest(key)}")
        out.append(p)
    return out
