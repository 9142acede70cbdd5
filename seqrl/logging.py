"""Host-side metric sinks: a progress bar, ``metrics.jsonl`` and TensorBoard events.

Metrics are reduced on device and arrive here once per chunk; nothing here runs inside jit.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


class JsonlSink:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def trim(self, max_update: int) -> None:
        """Drops rows written after the checkpoint a resumed run starts from."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if row.get("update", 0) <= max_update:
                keep.append(line)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def write(self, rows: list[dict]) -> None:
        with self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")


class TensorBoardSink:
    """``train/<metric>`` scalars, one event per row (update) holding all of its metrics: a
    PPO update logs ~10 metrics, and one event each cost ~0.7 s of host time per 1,000
    updates (event framing, CRC, a write per event)."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def write(self, rows: list[dict]) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        # the writer's own accessor (add_scalar uses it too): tensorboardX has no public call
        # that writes several scalars as one event
        file_writer = self.writer._get_file_writer()
        for row in rows:
            step = row.get("env_steps", row["update"])
            values = [
                Summary.Value(tag=f"train/{key}", simple_value=float(value))
                for key, value in row.items()
                if key not in ("update", "env_steps", "samples")
                and isinstance(value, int | float)
                and math.isfinite(value)
            ]
            if values:
                file_writer.add_summary(Summary(value=values), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class ProgressBar:
    """Progress of a run: steps done / total, steps per second, latest training return, ETA.

    In a terminal (or Jupyter) a rich progress bar. Elsewhere (a CI log, ``nohup``, a pipe),
    where a redrawn bar would come out as cut-off fragments, one plain line at most every
    ``interval`` seconds and one at the end, each whole."""

    def __init__(
        self,
        total: int,
        description: str,
        enabled: bool = True,
        completed: int = 0,
        stream: Any = None,
        interval: float = 5.0,
    ):
        self.enabled, self.total, self.description = enabled, total, description
        if not enabled:
            return
        from rich.console import Console

        console = Console(file=stream) if stream is not None else Console()
        self.plain = not (console.is_terminal or console.is_jupyter)
        if self.plain:
            self.stream = console.file
            self.interval, self.last_line = interval, -math.inf
            self.start, self.start_steps = time.monotonic(), completed
            self.line = ""
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("return {task.fields[ret]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(
            description, total=total, completed=completed, rate="-", ret="-"
        )
        self.progress.start()

    def update(self, completed: int, steps_per_second: float, ret: float | None) -> None:
        if not self.enabled:
            return
        rate = f"{steps_per_second:,.0f}/s"
        shown = "-" if ret is None or not math.isfinite(ret) else f"{ret:.1f}"
        if not self.plain:
            self.progress.update(self.task, completed=completed, rate=rate, ret=shown)
            return
        now = time.monotonic()
        done = completed - self.start_steps  # steps/s of this process, for the ETA
        eta = (self.total - completed) * (now - self.start) / done if done > 0 else math.nan
        self.line = (
            f"{self.description}: {completed:,}/{self.total:,} steps "
            f"({100 * completed / max(self.total, 1):.0f}%), {rate}, return {shown}, "
            f"ETA {_clock(eta)}"
        )
        if now - self.last_line >= self.interval or completed >= self.total:
            self._emit(now)

    def _emit(self, now: float) -> None:
        print(self.line, file=self.stream, flush=True)
        self.last_line, self.line = now, ""

    def close(self) -> None:
        if not self.enabled:
            return
        if self.plain:
            if self.line:  # the last update, if the interval held it back
                self._emit(time.monotonic())
            return
        self.progress.stop()


def _clock(seconds: float) -> str:
    """0:01:05 (h:mm:ss); - when not known."""
    if not math.isfinite(seconds):
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
