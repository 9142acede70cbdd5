"""Host-side metric sinks: a progress bar, ``metrics.jsonl`` and TensorBoard events.

Metrics are reduced on device and arrive here once per chunk; nothing here runs inside jit.
"""

from __future__ import annotations

import json
import math
import os
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
    """rich progress: steps done / total, steps per second, latest training return."""

    def __init__(self, total: int, description: str, enabled: bool = True, completed: int = 0):
        self.enabled = enabled
        if not enabled:
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
        self.progress.update(self.task, completed=completed, rate=rate, ret=shown)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()
