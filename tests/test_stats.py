"""Interval estimates over tasks x seeds (seqrl.stats): hand-checked cases and coverage."""

import numpy as np
import pytest

from seqrl import stats


def test_constant_scores_have_a_zero_width_interval_at_their_value():
    out = stats.interval(np.full((5, 3), 0.4))
    assert out["estimate"] == pytest.approx(0.4) and out["low"] == out["high"] == out["estimate"]
    one_seed = stats.interval([[1.0], [3.0]])  # nothing to resample within a task
    assert one_seed["estimate"] == one_seed["low"] == one_seed["high"] == 2.0


def test_the_bootstrap_resamples_seeds_within_tasks_only():
    """Tasks differ wildly but each task's seeds agree: the task-to-task spread is the
    benchmark, not noise, so the interval is the point (a pooled bootstrap would be wide)."""
    scores = np.repeat(np.array([[0.0], [10.0], [100.0]]), 4, axis=1)
    scores[:, 1] += 1e-9  # not exactly constant: the bootstrap runs
    out = stats.interval(scores)
    assert out["high"] - out["low"] < 1e-6
    assert out["estimate"] == pytest.approx(110 / 3)


def test_iqm_drops_the_outer_quartiles():
    scores = np.array([[0.0, 1.0, 2.0, 100.0]])  # iqm of 0, 1, 2, 100 = mean(1, 2)
    assert stats.interval(scores, statistic="iqm")["estimate"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="statistic"):
        stats.interval(scores, statistic="median")


def test_paired_differences_hold_only_when_the_interval_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(10, 5))
    better = base + 1.0 + 0.1 * rng.normal(size=(10, 5))
    same = base + 0.5 * rng.normal(size=(10, 5))
    assert stats.paired_difference(better, base)["verdict"] == "holds"
    assert stats.paired_difference(base, better)["verdict"] == "reversed"
    null = stats.paired_difference(same, base)
    assert null["verdict"] == "inconclusive" and null["low"] < 0 < null["high"]
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_difference(base, base[:, :2])


def test_the_interval_covers_the_true_mean_about_95_percent_of_the_time():
    """100 experiments of 10 tasks x 10 seeds with known task means: the stratified
    interval contains the mean of the task means in ~95 of them (binomial sd ~2.2)."""
    rng = np.random.default_rng(1)
    task_means = rng.normal(size=10)
    hits = 0
    for i in range(100):
        scores = task_means[:, None] + rng.normal(size=(10, 10))
        out = stats.interval(scores, resamples=500, seed=i)
        hits += out["low"] <= task_means.mean() <= out["high"]
    assert 85 <= hits <= 100


def test_bad_shapes_and_values_are_refused():
    for bad in ([1.0, 2.0], np.zeros((0, 3)), [[1.0, np.nan]]):
        with pytest.raises(ValueError):
            stats.interval(bad)


def test_gap_closed_is_the_share_of_the_floor_to_oracle_gap():
    np.testing.assert_allclose(
        stats.gap_closed([0.5, 1.0, 0.2], [0.0, 0.0, 0.2], [1.0, 2.0, 0.2]), [0.5, 0.5, np.nan]
    )


def test_eval_meta_reports_every_task_and_seed_for_the_intervals():
    from seqrl.meta_eval import summarize

    returns = np.array([[[1.0, 3.0], [0.0, 0.0]], [[2.0, 2.0], [4.0, 2.0]]])  # [seeds, tasks, ep]
    refs = {"random": np.array([0.0, 0.0]), "oracle": np.array([4.0, 6.0])}
    out = summarize(returns, refs)
    assert out["per_task_seed_return"] == [[2.0, 2.0], [0.0, 3.0]]  # [tasks][seeds]
    assert out["per_task_seed_normalized"] == [[0.5, 0.5], [0.0, 0.5]]
    assert out["per_task_return"] == [2.0, 1.5] and out["normalized_mean"] == pytest.approx(0.375)
