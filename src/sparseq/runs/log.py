"""Run outputs: metrics.jsonl (always), episodes.csv, and W&B (never fatal)."""

import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sparseq.outputs.wandb_dashboard import STEP_UNITS, default_group, default_tags, define_step_metric, step_unit
from sparseq.pipeline.config.schema import WandbConfig


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rewrite(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)


def _truncate_lines(path: Path, lines: int) -> None:
    """Keeps the first `lines` lines of `path` (what a checkpoint had seen)."""
    if path.exists():
        _rewrite(path, path.read_text().splitlines(keepends=True)[:lines])


def _truncate_timing(path: Path, step_lines: int) -> None:
    """Keeps timing.jsonl up to its `step_lines`-th per-log-point line, with the phase
    events (lines with an "event" key) that came before it."""
    if not path.exists():
        return
    kept, seen = [], 0
    for line in path.read_text().splitlines(keepends=True):
        is_event = '"event"' in line
        if seen == step_lines and (step_lines > 0 or not is_event):
            break
        seen += not is_event
        kept.append(line)
    _rewrite(path, kept)


class MetricsLog:
    """metrics.jsonl (one JSON object per log point, deterministic content),
    timing.jsonl (wall-clock figures: one line per log point, and phase events with an
    "event" key) and episodes.csv (one row per training episode).
    Lines are flushed at once, so a killed run keeps every line it reached; a resumed
    run first cuts the files back to what its checkpoint had seen."""

    EPISODES_HEADER = "env_steps,episode_return,episode_length\n"

    def __init__(self, folder: Path, truncate_to: tuple[int, int] | None = None):
        self.path = folder / "metrics.jsonl"
        self.timing_path = folder / "timing.jsonl"
        self.episodes_path = folder / "episodes.csv"
        if truncate_to is not None:
            _truncate_lines(self.path, truncate_to[0])
            _truncate_timing(self.timing_path, truncate_to[0])
            _truncate_lines(self.episodes_path, truncate_to[1])
        self._metrics_lines = self._count(self.path)
        self._episodes_lines = self._count(self.episodes_path)
        self._metrics = self.path.open("a")
        self._timing = self.timing_path.open("a")
        self._episodes = self.episodes_path.open("a")
        if self._episodes_lines == 0:
            self._episodes.write(self.EPISODES_HEADER)
            self._episodes.flush()
            self._episodes_lines = 1

    @staticmethod
    def _count(path: Path) -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0

    def metrics_lines(self) -> int:
        return self._metrics_lines

    def episodes_lines(self) -> int:
        return self._episodes_lines

    def write(self, record: dict[str, Any], timing: dict[str, Any] | None = None) -> None:
        self._metrics.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._metrics.flush()
        self._metrics_lines += 1
        if timing is not None:
            self._timing.write(json.dumps({k: _clean(v) for k, v in timing.items()}) + "\n")
            self._timing.flush()

    def write_event(self, event: str, **fields: Any) -> None:
        """A phase event in timing.jsonl (loop start, first chunk, loop end, wrap-up)."""
        self._timing.write(json.dumps({"event": event, **{k: _clean(v) for k, v in fields.items()}}) + "\n")
        self._timing.flush()

    def write_episodes(self, rows: list[tuple[int, float, int]]) -> None:
        self._episodes.writelines(f"{s},{r:.9g},{n}\n" for s, r, n in rows)
        self._episodes.flush()
        self._episodes_lines += len(rows)

    def close(self) -> None:
        for handle in (self._metrics, self._timing, self._episodes):
            if not handle.closed:
                handle.close()


class WandbLog:
    """W&B mirror of the metrics. Any failure (no account, no network, bad setting)
    is reported once and W&B is switched off; training goes on with local files.

    Every W&B call (its import and `wandb.init` cost a few seconds of start-up) runs
    in order on one worker thread, so the run starts and logs without waiting for it;
    `finish` waits for all of it. The run id is chosen here, before `wandb.init`, so
    a checkpoint can record it at once.

    Dashboards (sparseq.outputs.wandb_dashboard): the run's group is `group`, else
    `settings.group`, else the pipeline's name and task (the same for every seed of a
    pack); its tags are `tags`, else algorithm, task, `seed-<s>` and `learner-<kind>`;
    job_type "train". Every metric is plotted against the run's step counter
    (`env_steps`, `gradient_steps` offline), which every logged row carries, images and
    videos too; W&B's own `_step` only counts rows."""

    def __init__(
        self,
        settings: WandbConfig,
        folder: Path,
        name: str,
        config: dict[str, Any],
        run_id: str | None = None,
        *,
        group: str | None = None,
        tags: Sequence[str] | None = None,
        job_type: str = "train",
    ):
        self._run = None
        self._worker = None
        self._run_id = None
        self.group = group or settings.group or default_group(name, config)
        self.tags = tuple(tags) if tags is not None else default_tags(config)
        self.job_type = job_type
        self.step_key = step_unit(config)  # the x-axis; the records' own step key wins
        self._axis: str | None = None  # the step metric defined on the run (worker thread)
        self._last_step: int | None = None
        self._videos: list[tuple[str, Any]] = []  # logged with the next row (their step)
        if settings.mode == "disabled":
            return
        from concurrent.futures import ThreadPoolExecutor

        resuming = run_id is not None
        self._run_id = run_id or new_run_id()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparseq-wandb")
        self._started = self._worker.submit(self._init, settings, folder, name, config, resuming)

    def _init(self, settings: WandbConfig, folder: Path, name: str, config: dict[str, Any], resuming: bool) -> None:
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self._run = wandb.init(
                project=settings.project,
                entity=settings.entity or None,
                group=self.group,
                tags=list(self.tags),
                job_type=self.job_type,
                name=name,
                dir=str(folder),
                mode=settings.mode,
                config=config,
                id=self._run_id,
                resume="allow" if resuming else None,
                settings=wandb.Settings(init_timeout=30, console="off", x_disable_stats=True),
            )
        except Exception as error:
            self._warn(error)
            return
        self._define_axis(self._run, self.step_key)

    def _define_axis(self, run: Any, key: str) -> None:
        """Plots every metric against `key`; a run that cannot (an old or fake wandb)
        keeps W&B's row counter as its x-axis, which is no reason to stop logging."""
        self._axis = key
        try:
            define_step_metric(run, key)
        except Exception:
            pass

    @property
    def run(self) -> Any:
        """The W&B run once `wandb.init` returned (None when off or failed)."""
        if self._worker is not None:
            self._started.result()
        return self._run

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def _warn(self, error: Exception) -> None:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(f"W&B disabled for this run ({message}); metrics stay in metrics.jsonl", stacklevel=3)
        print(f"warning: W&B disabled for this run ({message}); metrics stay in metrics.jsonl", file=sys.stderr)
        self._run = None

    def _submit(self, call: Any) -> None:
        """Runs `call(run)` on the worker once the run exists, unless W&B is off."""

        def task() -> None:
            if self._run is None:
                return
            try:
                call(self._run)
            except Exception as error:
                self._warn(error)

        if self._worker is not None:
            self._worker.submit(task)

    def _step_row(self) -> dict[str, Any]:
        return {} if self._last_step is None else {self.step_key: self._last_step}

    def _log_row(self, row: dict[str, Any], media: Callable[[], dict[str, Any]] | None = None) -> None:
        """Logs `row` (and `media()`, made on the worker) as one W&B row, with the videos
        waiting for it."""
        videos, self._videos = self._videos, []
        key = self.step_key

        def log(run: Any) -> None:
            if key != self._axis:
                self._define_axis(run, key)
            full = {**row, **(media() if media is not None else {})}
            if videos:
                from sparseq.outputs.video import log_video_to_wandb

                step = {key: row[key]} if key in row else {}
                merge = False if full else None  # into the row that follows, when one does
                for video_key, video in videos:
                    log_video_to_wandb(_RowRun(run, step, commit=merge), video_key, video)
            if full:
                run.log(full)

        self._submit(log)

    def log(self, record: dict[str, Any], step: int) -> None:
        """One log point; the row carries the step counter (the record's, else `step`)."""
        self.step_key = next((k for k in STEP_UNITS if k in record), self.step_key)
        values = {k: v for k, v in record.items() if v is not None}
        values.setdefault(self.step_key, step)
        self._last_step = values[self.step_key]
        self._log_row(values)

    def log_images(self, images: dict[str, Path], *, step: int | None = None) -> None:
        """Images (the plots at the end) at `step`, by default the last logged step."""
        row = {self.step_key: step} if step is not None else self._step_row()
        present = {key: path for key, path in images.items() if path.exists()}
        if not present:
            return

        def media() -> dict[str, Any]:
            import wandb

            return {key: wandb.Image(str(path)) for key, path in present.items()}

        self._log_row(row, media)

    def log_video(self, key: str, video: Any) -> None:
        """An evaluation video (a sparseq.outputs.video.VideoResult) as a W&B video. The
        runner records it just before its log point's `log`: it goes into that row."""
        if self._worker is not None:
            self._videos.append((key, video))

    def finish(self, summary: dict[str, Any]) -> None:
        """Writes the summary, finishes the W&B run and waits for every call before."""
        if self._videos:  # videos no log point followed
            self._log_row(self._step_row())

        def finish(run: Any) -> None:
            for key, value in summary.items():
                run.summary[key] = value
            run.finish()

        self._submit(finish)
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
            self._run = None


class _RowRun:
    """A run whose `log` adds `extra` to each row (log_video_to_wandb logs through it)."""

    def __init__(self, run: Any, extra: dict[str, Any], commit: bool | None = None):
        self._run, self._extra, self._commit = run, extra, commit

    def log(self, data: dict[str, Any], **kwargs: Any) -> None:
        self._run.log({**self._extra, **data}, commit=self._commit, **kwargs)


def new_run_id() -> str:
    """A W&B-style run id (8 lowercase letters and digits)."""
    import secrets
    import string

    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))
