"""Bootstrap confidence intervals and the paired bootstrap test for evaluation aggregates.

Every aggregate sftkit reports (a mean of per-example scores, or a corpus statistic such as
BLEU or macro F1) gets a percentile bootstrap interval: resample the examples with
replacement ``resamples`` times (seeded), recompute the aggregate on each resample, and take
the 2.5th and 97.5th percentiles. When two models are compared, both are scored on the *same*
resampled rows (a paired bootstrap), which gives an interval for the difference and a
two-sided p-value.

The p-value follows Berg-Kirkpatrick, Burkett and Klein (2012): the bootstrap distribution
of the difference is shifted to the null hypothesis (difference 0), and p is the share of
resamples whose shifted difference is at least as extreme as the observed one:
``p = (1 + #{|d* - d| >= |d|}) / (1 + resamples)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Difference:
    """``tuned - base`` with its paired bootstrap interval and two-sided p-value."""

    value: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (the difference is outside the noise)."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | bool]:
        return {"value": self.value, "low": self.low, "high": self.high, "p_value": self.p_value,
                "significant": self.significant}


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """A ``(resamples, n)`` array of row indices drawn with replacement (seeded)."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty sample")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(replicates: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap replicates."""
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.asarray(replicates, dtype=float), [alpha, 1.0 - alpha])
    return float(low), float(high)


def mean_replicates(scores: Sequence[float], indices: np.ndarray) -> np.ndarray:
    """The mean of ``scores`` on every resample (vectorised)."""
    return np.asarray(scores, dtype=float)[indices].mean(axis=1)


def statistic_replicates(statistic: Callable[[np.ndarray], float], indices: np.ndarray) -> np.ndarray:
    """``statistic(rows)`` on every resample, for aggregates that are not a mean (BLEU, F1)."""
    return np.array([statistic(rows) for rows in indices], dtype=float)


def interval(value: float, replicates: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """An Interval from a point estimate and its bootstrap replicates."""
    low, high = percentile_interval(replicates, confidence)
    return Interval(float(value), low, high)


def paired_difference(base_value: float, tuned_value: float, base_replicates: np.ndarray,
                      tuned_replicates: np.ndarray, confidence: float = CONFIDENCE) -> Difference:
    """The paired bootstrap on ``tuned - base``; replicates must come from the same resamples."""
    base_replicates = np.asarray(base_replicates, dtype=float)
    tuned_replicates = np.asarray(tuned_replicates, dtype=float)
    if base_replicates.shape != tuned_replicates.shape:
        raise ValueError("paired replicates must come from the same resamples")
    observed = float(tuned_value - base_value)
    diffs = tuned_replicates - base_replicates
    low, high = percentile_interval(diffs, confidence)
    extreme = int(np.sum(np.abs(diffs - observed) >= abs(observed)))
    p_value = (1 + extreme) / (1 + len(diffs))
    return Difference(observed, low, high, float(min(1.0, p_value)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (in the given order): the i-th smallest p times
    ``m - i + 1`` (i from 1), made non-decreasing in that order, at most 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * float(p_values[index])))
        adjusted[index] = running
    return adjusted


def bootstrap_mean(scores: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED,
                   confidence: float = CONFIDENCE) -> Interval:
    """The mean of per-example scores with its percentile bootstrap interval."""
    scores = np.asarray(scores, dtype=float)
    indices = resample_indices(len(scores), resamples, seed)
    return interval(float(scores.mean()), mean_replicates(scores, indices), confidence)


def paired_bootstrap_mean(base: Sequence[float], tuned: Sequence[float], resamples: int = RESAMPLES,
                          seed: int = SEED, confidence: float = CONFIDENCE) -> Difference:
    """The paired bootstrap on the difference of two means of per-example scores."""
    base, tuned = np.asarray(base, dtype=float), np.asarray(tuned, dtype=float)
    if base.shape != tuned.shape:
        raise ValueError("paired scores must have one score per example for both models")
    indices = resample_indices(len(base), resamples, seed)
    return paired_difference(float(base.mean()), float(tuned.mean()), mean_replicates(base, indices),
                             mean_replicates(tuned, indices), confidence)
