"""Corpus-level sacrebleu scores (BLEU, chrF, TER) on bootstrap resamples, cheaply.

A corpus score is not the mean of sentence scores: sacrebleu sums per-segment statistics
(n-gram matches, edits, lengths) over the corpus and computes the score from the sums. So the
score of a resample is the score of its rows' summed statistics: extract them once, then
each of 1,000 resamples is one sum. A metric plugin's ``resampled`` attribute is then::

    from sacrebleu.metrics import CHRF
    from sftkit.corpus import resampled_corpus_score

    def resampled(predictions, references, indices, word_order: int = 0):
        return {"chrf": resampled_corpus_score(CHRF(word_order=word_order), predictions, references, indices)}

sacrebleu (2.x) offers per-segment statistics only through private methods
(``_extract_corpus_statistics``, ``_compute_score_from_stats``); this module is the one place
that calls them, checks the version, and is tested to equal ``corpus_score`` on every resample
(``tests/test_corpus.py``), so plugins never touch sacrebleu's private API.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SUPPORTED_MAJOR = 2  # the sacrebleu major version whose private statistics API this wraps


def _check_version() -> None:
    import sacrebleu

    from sftkit.errors import UsageError

    major = int(str(sacrebleu.__version__).split(".")[0])
    if major != SUPPORTED_MAJOR:
        raise UsageError(f"sftkit.corpus supports sacrebleu {SUPPORTED_MAJOR}.x, found {sacrebleu.__version__}",
                         hint=f"install sacrebleu>={SUPPORTED_MAJOR},<{SUPPORTED_MAJOR + 1}")


def segment_statistics(metric: Any, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu's sufficient statistics, one row per example (one reference each): rows sum.

    ``metric`` is a sacrebleu metric object (``BLEU(...)``, ``CHRF(...)``, ``TER(...)``) with
    its settings; the statistics are integers for BLEU and chrF, floats for TER.
    """
    _check_version()
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return np.asarray(metric._extract_corpus_statistics(list(predictions), [list(references)]))


def score_from_statistics(metric: Any, statistics: np.ndarray) -> float:
    """The corpus score of the rows of ``statistics`` (equals ``metric.corpus_score`` on them)."""
    _check_version()
    return _score(metric, statistics)


def _score(metric: Any, statistics: np.ndarray) -> float:
    return float(metric._compute_score_from_stats(np.asarray(statistics).sum(axis=0).tolist()).score)


def resampled_corpus_score(metric: Any, predictions: Sequence[str], references: Sequence[str],
                           indices: np.ndarray) -> np.ndarray:
    """The corpus score of each bootstrap resample: ``indices`` is the 2-D integer array sftkit
    passes to ``resampled`` (one resample per row, row indices into the examples); returns one
    float per row, each equal to ``metric.corpus_score`` on that resample's rows."""
    statistics = segment_statistics(metric, predictions, references)
    indices = np.asarray(indices)
    if indices.ndim != 2:
        raise ValueError(f"indices must be 2-D (one resample per row), got shape {indices.shape}")
    return np.asarray([_score(metric, statistics[rows]) for rows in indices], dtype=float)
