"""Learning curves from ``metrics.jsonl``: one run (``curve.png``) or several overlaid."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seqrl.errors import UserError


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


def _curve(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """env steps, mean and std over seeds of the training return (updates without a finished
    episode are carried forward)."""
    rows = [r for r in rows if r.get("return_seeds") is not None]
    if not rows:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    x = np.array([r.get("env_steps", r.get("update", 0)) for r in rows], float)
    y = np.array([[np.nan if v is None else v for v in r["return_seeds"]] for r in rows], float)
    for t in range(1, len(y)):  # forward-fill updates where a seed finished no episode
        y[t] = np.where(np.isnan(y[t]), y[t - 1], y[t])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return x, np.nanmean(y, axis=1), np.nanstd(y, axis=1)


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None):
    """Overlays the return curves (mean +- std over seeds) of ``run_dirs`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for i, run_dir in enumerate(run_dirs):
        x, mean, std = _curve(read_metrics(run_dir))
        label = labels[i] if labels else Path(run_dir).name
        ax.plot(x, mean, label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return (training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


def sparkline(run_dir: str | Path, width: int = 48) -> str:
    """The learning curve of a run as one line of block characters (for the terminal)."""
    _, mean, _ = _curve(read_metrics(run_dir))
    mean = mean[np.isfinite(mean)]
    if mean.size == 0:
        return ""
    chunks = np.array_split(mean, min(width, mean.size))
    values = np.array([c.mean() for c in chunks])
    lo, hi = float(values.min()), float(values.max())
    blocks = "▁▂▃▄▅▆▇█"
    scaled = np.zeros_like(values) if hi == lo else (values - lo) / (hi - lo)
    line = "".join(blocks[int(round(v * (len(blocks) - 1)))] for v in scaled)
    return f"{lo:.3g} {line} {hi:.3g}"
