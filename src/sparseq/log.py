"""Run outputs: metrics.jsonl (always), episodes.csv, and W&B (never fatal)."""

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from sparseq.config.schema import WandbConfig


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Appends one JSON object per log point; flushed at once so a killed run keeps
    every line it reached."""

    def __init__(self, folder: Path):
        self.path = folder / "metrics.jsonl"
        self.episodes_path = folder / "episodes.csv"
        self._metrics = self.path.open("a")
        new_episodes = not self.episodes_path.exists()
        self._episodes = self.episodes_path.open("a")
        if new_episodes:
            self._episodes.write("env_steps,episode_return,episode_length\n")

    def write(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._metrics.flush()

    def write_episodes(self, rows: list[tuple[int, float, int]]) -> None:
        self._episodes.writelines(f"{s},{r:.6g},{n}\n" for s, r, n in rows)
        self._episodes.flush()

    def close(self) -> None:
        self._metrics.close()
        self._episodes.close()


class WandbLog:
    """W&B mirror of the metrics. Any failure (no account, no network, bad setting)
    is reported once and W&B is switched off; training goes on with local files."""

    def __init__(self, settings: WandbConfig, folder: Path, name: str, config: dict[str, Any]):
        self.run = None
        if settings.mode == "disabled":
            return
        try:
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=settings.project,
                entity=settings.entity or None,
                group=settings.group or None,
                name=name,
                dir=str(folder),
                mode=settings.mode,
                config=config,
                settings=wandb.Settings(init_timeout=30, console="off", x_disable_stats=True),
            )
        except Exception as error:
            self._warn(error)

    def _warn(self, error: Exception) -> None:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        warnings.warn(f"W&B disabled for this run ({message}); metrics stay in metrics.jsonl", stacklevel=3)
        print(f"warning: W&B disabled for this run ({message}); metrics stay in metrics.jsonl", file=sys.stderr)
        self.run = None

    def log(self, record: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in record.items() if v is not None}, step=step)
        except Exception as error:
            self._warn(error)

    def log_images(self, images: dict[str, Path]) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({key: wandb.Image(str(path)) for key, path in images.items() if path.exists()})
        except Exception as error:
            self._warn(error)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            for key, value in summary.items():
                self.run.summary[key] = value
            self.run.finish()
        except Exception as error:
            self._warn(error)
