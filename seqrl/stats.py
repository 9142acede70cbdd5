"""Interval estimates for results over tasks x seeds, as RL results are reported (Agarwal et al.,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021).

Scores come as ``[tasks, seeds]``. The point estimate is the mean (or the interquartile mean)
over every (task, seed) cell; its 95% interval is a *stratified* bootstrap: the seeds of each
task are resampled within that task (the tasks are the benchmark; the seeds are the noise), by
``scipy.stats.bootstrap`` with one sample per task. A difference between two agents is paired
(same tasks, same seeds) and a claim holds only when its interval excludes 0.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

STATISTICS = ("mean", "iqm")


def _statistic(name: str):
    """``f(*per_task_samples, axis)`` -> the statistic over all cells (vectorized)."""
    if name not in STATISTICS:
        raise ValueError(f"statistic {name!r} is not one of {', '.join(STATISTICS)}")

    def pooled(*samples, axis=-1):
        cells = np.concatenate(samples, axis=axis)
        if name == "mean":
            return np.mean(cells, axis=axis)
        return stats.trim_mean(cells, 0.25, axis=axis)  # the interquartile mean

    return pooled


def interval(
    scores, *, statistic: str = "mean", confidence: float = 0.95, resamples: int = 2000, seed=0
) -> dict:
    """``{"estimate", "low", "high"}`` of ``statistic`` over ``scores[tasks, seeds]`` with a
    stratified bootstrap ``confidence`` interval (percentile method; NaN-free input)."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"scores must be [tasks, seeds], got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    f = _statistic(statistic)
    estimate = float(f(*scores, axis=-1))
    if scores.shape[1] == 1 or np.ptp(scores, axis=1).max() == 0:  # nothing to resample
        return {"estimate": estimate, "low": estimate, "high": estimate}
    result = stats.bootstrap(
        tuple(scores),
        f,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return {"estimate": estimate, "low": float(ci.low), "high": float(ci.high)}


def paired_difference(a, b, **kwargs) -> dict:
    """Agent ``a`` minus agent ``b`` on the same ``[tasks, seeds]`` cells: :func:`interval` of
    the differences, and ``verdict``: ``holds`` (a > b: the interval is above 0), ``reversed``
    (below 0) or ``inconclusive`` (it contains 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must have one shape, got {a.shape} and {b.shape}")
    out = interval(a - b, **kwargs)
    if out["low"] > 0:
        out["verdict"] = "holds"
    elif out["high"] < 0:
        out["verdict"] = "reversed"
    else:
        out["verdict"] = "inconclusive"
    return out


def gap_closed(agent, floor, oracle) -> np.ndarray:
    """``(agent - floor) / (oracle - floor)`` per cell: the share of the floor-to-oracle gap
    an agent closes (NaN where the oracle is no better than the floor)."""
    agent, floor, oracle = (np.asarray(x, np.float64) for x in (agent, floor, oracle))
    gap = oracle - floor
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 0, (agent - floor) / np.where(gap > 0, gap, 1.0), np.nan)
