"""Corpus BLEU with sacrebleu, reporting its signature.

The aggregate is sacrebleu's corpus BLEU (0-100) over all examples, with references shaped
``[stream][segment]`` (one reference stream). Per-example scores are sacrebleu's sentence
BLEU with effective n-gram order (the form sacrebleu recommends for single sentences); they
rank examples in the report but their mean is not BLEU. The bootstrap resamples corpus BLEU
from per-segment n-gram statistics extracted once (``sftkit.corpus``), so 1,000 resamples cost little.
``tokenize`` must suit the language: ``13a`` (default, WMT), ``zh`` for Chinese,
``ja-mecab``/``ko-mecab`` where installed, ``char``, ``intl``, ``none``, ``flores200``.
"""
from __future__ import annotations

import re
import warnings
from typing import Annotated, Literal

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where used: `sftkit plugins` stays light
    import numpy as np
from pydantic import Field

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
CJK_WARNING_SHARE = 0.3
# sacrebleu's tokenizers (sacrebleu.metrics.bleu._TOKENIZERS; a test keeps the two equal)
TOKENIZERS = ("13a", "none", "zh", "intl", "char", "ja-mecab", "ko-mecab", "spm", "flores101", "flores200",
              "spBLEU-1K")


def _bleu(tokenize: str, lowercase: bool, **extra):
    from sacrebleu.metrics import BLEU

    try:
        return BLEU(tokenize=tokenize, lowercase=lowercase, **extra)
    except Exception as exc:  # sacrebleu raises plain errors for unknown tokenizers
        from sftkit import UsageError

        raise UsageError(f"bleu: {exc}", hint="e.g. --metric-option bleu.tokenize=zh for Chinese") from None


def _cjk_share(texts: list[str]) -> float:
    total = sum(len(t) for t in texts)
    return 0.0 if total == 0 else sum(len(CJK.findall(t)) for t in texts) / total


def segment_statistics(predictions: list[str], references: list[str], tokenize: str = "13a",
                       lowercase: bool = False) -> np.ndarray:
    """sacrebleu's sufficient statistics per segment: one row per example (summable)."""
    import numpy as np
    from sftkit.corpus import segment_statistics as statistics

    return statistics(_bleu(tokenize, lowercase), predictions, references).astype(np.int64)


def score_from_statistics(stats: np.ndarray, tokenize: str = "13a", lowercase: bool = False) -> float:
    """Corpus BLEU from summed per-segment statistics (equals ``corpus_score``)."""
    from sftkit.corpus import score_from_statistics as score

    return score(_bleu(tokenize, lowercase), stats)


def bleu(predictions: list[str], references: list[str],
         tokenize: Annotated[Literal[TOKENIZERS], Field(description="sacrebleu's tokenizer: 13a (WMT), zh for "
                                                                    "Chinese, ja-mecab/ko-mecab where installed, "
                                                                    "char, intl, none, spm/flores (need their "
                                                                    "model files)")] = "13a",
         lowercase: Annotated[bool, Field(description="lowercase before scoring")] = False,
         ) -> dict[str, list[float]]:
    """sacrebleu BLEU: corpus BLEU aggregate (0-100, with signature); sentence BLEU per example."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if tokenize == "13a" and _cjk_share(list(references)) > CJK_WARNING_SHARE:
        warnings.warn("bleu: the references are mostly Chinese/Japanese/Korean characters but the tokenizer is 13a, "
                      "which splits on spaces only; use --metric-option bleu.tokenize=zh (Chinese) or ja-mecab",
                      UserWarning, stacklevel=2)
    sentence = _bleu(tokenize, lowercase, effective_order=True)
    return {"bleu": [float(sentence.sentence_score(p, [r]).score) for p, r in zip(predictions, references)]}


def aggregate(predictions: list[str], references: list[str], tokenize: str = "13a",
              lowercase: bool = False) -> dict[str, float]:
    """sacrebleu corpus BLEU over all examples."""
    return {"bleu": float(_bleu(tokenize, lowercase).corpus_score(list(predictions), [list(references)]).score)}


def resampled(predictions: list[str], references: list[str], indices: np.ndarray, tokenize: str = "13a",
              lowercase: bool = False) -> dict[str, np.ndarray]:
    """Corpus BLEU on every bootstrap resample (rows of ``indices``), from statistics extracted once
    (``sftkit.corpus.resampled_corpus_score``)."""
    from sftkit.corpus import resampled_corpus_score

    return {"bleu": resampled_corpus_score(_bleu(tokenize, lowercase), predictions, references, indices)}


def describe(tokenize: str = "13a", lowercase: bool = False) -> dict[str, str]:
    """sacrebleu's signature, for the report."""
    metric = _bleu(tokenize, lowercase)
    metric.corpus_score(["a"], [["a"]])  # sacrebleu knows the reference count only after scoring
    return {"definition": "sacrebleu corpus BLEU (0-100); per-example: sentence BLEU, effective order",
            "signature": str(metric.get_signature())}


bleu.aggregate = aggregate
bleu.resampled = resampled
bleu.describe = describe
bleu.default_for = {"summarization": 2, "generation": 2}
