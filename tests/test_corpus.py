"""sftkit.corpus: corpus BLEU, chrF and TER on bootstrap resamples equal sacrebleu's own
``corpus_score`` on each resample (computed here by calling ``corpus_score`` on the resampled
rows, independently of the statistics the helper sums)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF, TER

from sftkit.corpus import resampled_corpus_score, score_from_statistics, segment_statistics
from sftkit.stats import resample_indices

DIALOGUES = Path(__file__).parent / "data" / "eval" / "dialogues.jsonl"


def corpus() -> tuple[list[str], list[str]]:
    """Pairs of real-looking text: dialogue lines as predictions, summaries as references, plus odd rows."""
    rows = [json.loads(line) for line in DIALOGUES.read_text(encoding="utf-8").splitlines()]
    predictions = [line.split(": ", 1)[1] for r in rows for line in r["dialogue"].splitlines()]
    references = [r["summary"] for r in rows for _ in r["dialogue"].splitlines()]
    predictions += ["", "The cat sat on the mat.", "Ünïcödé 😀 text", "exactly the same"]
    references += ["a reference for an empty output", "A cat was sitting on the mat.", "Ünïcödé text", "exactly the same"]
    return predictions, references


METRICS = {
    "bleu": lambda: BLEU(),
    "bleu_lowercase_intl": lambda: BLEU(lowercase=True, tokenize="intl"),
    "chrf": lambda: CHRF(),
    "chrf++": lambda: CHRF(word_order=2),
    "ter": lambda: TER(),
    "ter_case_insensitive": lambda: TER(case_sensitive=False),
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_resampled_corpus_score_equals_corpus_score_on_every_resample(name):
    predictions, references = corpus()
    indices = resample_indices(len(predictions), 200, seed=7)
    got = resampled_corpus_score(METRICS[name](), predictions, references, indices)
    assert got.shape == (200,)
    for r, rows in enumerate(indices):
        expected = METRICS[name]().corpus_score([predictions[i] for i in rows], [[references[i] for i in rows]]).score
        assert got[r] == pytest.approx(expected, rel=1e-12, abs=1e-12), (name, r)
    assert len(set(np.round(got, 9))) > 10  # the resamples differ: a constant answer would not pass


@pytest.mark.parametrize("name", sorted(METRICS))
def test_statistics_of_all_rows_give_the_corpus_score(name):
    predictions, references = corpus()
    stats = segment_statistics(METRICS[name](), predictions, references)
    assert stats.shape[0] == len(predictions)
    expected = METRICS[name]().corpus_score(predictions, [references]).score
    assert score_from_statistics(METRICS[name](), stats) == pytest.approx(expected, rel=1e-12)


def test_indices_must_be_two_dimensional_and_lengths_equal():
    predictions, references = corpus()
    with pytest.raises(ValueError, match="2-D"):
        resampled_corpus_score(CHRF(), predictions, references, np.arange(len(predictions)))
    with pytest.raises(ValueError, match="predictions for"):
        segment_statistics(CHRF(), predictions[:-1], references)


def test_another_sacrebleu_major_version_is_refused(monkeypatch):
    import sacrebleu

    from sftkit.errors import UsageError

    monkeypatch.setattr(sacrebleu, "__version__", "3.0.0")
    with pytest.raises(UsageError, match="supports sacrebleu 2.x, found 3.0.0"):
        segment_statistics(CHRF(), ["a"], ["a"])


def test_builtin_bleu_bootstrap_uses_the_helper():
    """The built-in BLEU metric's resampled path gives exactly the helper's values."""
    from sftkit.plugins.metrics.bleu_metric import resampled

    predictions, references = corpus()
    indices = resample_indices(len(predictions), 50, seed=1)
    expected = [BLEU().corpus_score([predictions[i] for i in rows], [[references[i] for i in rows]]).score
                for rows in indices]
    assert resampled(predictions, references, indices)["bleu"] == pytest.approx(expected, rel=1e-12)
