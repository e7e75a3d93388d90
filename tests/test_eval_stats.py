"""Bootstrap intervals and the paired bootstrap test (sftkit.stats)."""
from __future__ import annotations

import numpy as np
import pytest

from sftkit import stats


def test_resample_indices_are_seeded_and_in_range():
    a = stats.resample_indices(50, resamples=200, seed=3)
    b = stats.resample_indices(50, resamples=200, seed=3)
    c = stats.resample_indices(50, resamples=200, seed=4)
    assert a.shape == (200, 50) and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError):
        stats.resample_indices(0)


def test_bootstrap_mean_equals_a_plain_loop():
    rng = np.random.default_rng(0)
    scores = rng.random(80)
    result = stats.bootstrap_mean(scores, resamples=500, seed=1)
    indices = stats.resample_indices(80, 500, 1)
    loop = [float(np.mean([scores[i] for i in rows])) for rows in indices]
    assert result.value == pytest.approx(scores.mean())
    assert result.low == pytest.approx(np.percentile(loop, 2.5))
    assert result.high == pytest.approx(np.percentile(loop, 97.5))
    assert result.low < result.value < result.high


def test_interval_width_shrinks_with_more_data_and_covers_the_truth():
    rng = np.random.default_rng(5)
    small = stats.bootstrap_mean(rng.binomial(1, 0.7, 40), seed=0)
    large = stats.bootstrap_mean(rng.binomial(1, 0.7, 4000), seed=0)
    assert (large.high - large.low) < (small.high - small.low) / 5
    assert large.low < 0.7 < large.high
    # a binomial proportion: the percentile interval is close to the normal approximation
    n, p = 4000, large.value
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    assert (large.high - large.low) / 2 == pytest.approx(half, rel=0.15)


def test_paired_bootstrap_detects_a_real_improvement():
    rng = np.random.default_rng(2)
    base = rng.binomial(1, 0.4, 150).astype(float)
    tuned = base.copy()
    flip = rng.choice(np.where(base == 0)[0], size=40, replace=False)
    tuned[flip] = 1.0  # 40 more right answers, none lost
    diff = stats.paired_bootstrap_mean(base, tuned, seed=0)
    assert diff.value == pytest.approx(40 / 150)
    assert diff.low > 0 and diff.significant
    assert diff.p_value < 0.01


def test_paired_bootstrap_on_equal_models_is_not_significant():
    rng = np.random.default_rng(4)
    base = rng.random(100)
    diff = stats.paired_bootstrap_mean(base, base.copy(), seed=0)
    assert diff.value == 0.0 and diff.low == 0.0 and diff.high == 0.0
    assert diff.p_value == 1.0 and not diff.significant
    # two unrelated models of equal quality: the interval straddles 0, p is large
    other = rng.permutation(base)
    diff = stats.paired_bootstrap_mean(base, other, seed=0)
    assert diff.low < 0 < diff.high and diff.p_value > 0.05


def test_pairing_narrows_the_interval():
    """Correlated scores: the paired interval is much narrower than unpaired intervals suggest."""
    rng = np.random.default_rng(9)
    difficulty = rng.random(200)
    base = difficulty
    tuned = difficulty + 0.05 + rng.normal(0, 0.01, 200)
    diff = stats.paired_bootstrap_mean(base, tuned, seed=0)
    b, t = stats.bootstrap_mean(base, seed=0), stats.bootstrap_mean(tuned, seed=1)
    assert diff.low > 0.04 and diff.high < 0.06
    assert b.high > t.low  # the separate intervals overlap, the paired test still sees it


def test_paired_difference_rejects_unpaired_replicates():
    with pytest.raises(ValueError):
        stats.paired_difference(0.1, 0.2, np.zeros(10), np.zeros(11))
    with pytest.raises(ValueError):
        stats.paired_bootstrap_mean([1, 0], [1, 0, 1])


def test_statistic_replicates_for_a_corpus_statistic():
    values = np.array([1.0, 2.0, 3.0, 10.0])
    indices = stats.resample_indices(4, 50, 0)
    reps = stats.statistic_replicates(lambda rows: float(np.median(values[rows])), indices)
    assert reps.shape == (50,)
    assert all(v == pytest.approx(np.median(values[rows])) for v, rows in zip(reps, indices))
