"""ROUGE-1/2/L/Lsum F-measures with Google's rouge-score package (Porter stemming by default).

ROUGE-Lsum scores a summary sentence by sentence and needs one sentence per line; texts
without newlines are split after ``.``, ``!`` or ``?`` followed by whitespace (the same role
as nltk's sentence splitter in other tools, without its downloaded data). rouge-score's
default tokenizer lowercases and keeps only ``[a-z0-9]`` runs, so Chinese or Hindi text
tokenizes to nothing and identical texts score 0: ``tokenizer=whitespace`` splits on
whitespace and punctuation (any script), ``tokenizer=char`` makes each non-space character
a token (Chinese, Japanese); stemming applies to the default tokenizer only.
"""
from __future__ import annotations

import re
import unicodedata
import warnings
from typing import Annotated, Literal

from pydantic import Field

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
TOKENIZERS = ("default", "whitespace", "char")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
KEPT_BY_DEFAULT = re.compile(r"[a-z0-9]")
DROP_WARNING_SHARE = 0.5  # warn when the default tokenizer drops more than half of the characters


def split_sentences(text: str) -> str:
    """One sentence per line (what ROUGE-Lsum expects); text with newlines is kept as it is."""
    text = text.strip()
    if "\n" in text:
        return text
    return "\n".join(part for part in SENTENCE_END.split(text) if part)


def _strip_punctuation(text: str) -> str:
    return "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)


class WhitespaceTokenizer:
    """Lowercase, punctuation to spaces, split on whitespace: keeps words of every script."""

    def tokenize(self, text: str) -> list[str]:
        return _strip_punctuation(text.lower()).split()


class CharTokenizer:
    """Each non-space, non-punctuation character is a token (for Chinese and Japanese)."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in _strip_punctuation(text.lower()) if not ch.isspace()]


def dropped_share(texts: list[str]) -> float:
    """The share of non-space characters that rouge-score's default tokenizer throws away."""
    total = kept = 0
    for text in texts:
        chars = [ch for ch in text.lower() if not ch.isspace()]
        total += len(chars)
        kept += sum(1 for ch in chars if KEPT_BY_DEFAULT.match(ch))
    return 0.0 if total == 0 else 1.0 - kept / total


def _scorer(tokenizer: str, stemmer: bool):
    from rouge_score import rouge_scorer

    if tokenizer not in TOKENIZERS:
        from sftkit import UsageError

        raise UsageError(f"rouge: unknown tokenizer {tokenizer!r}", hint=f"choose one of {', '.join(TOKENIZERS)}")
    custom = {"whitespace": WhitespaceTokenizer(), "char": CharTokenizer()}.get(tokenizer)
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=stemmer, tokenizer=custom)


def rouge(predictions: list[str], references: list[str],
          tokenizer: Annotated[Literal[TOKENIZERS], Field(description="default: rouge-score's (a-z, 0-9 only); "
                                                                      "whitespace: words of any script; char: each "
                                                                      "character (Chinese, Japanese)")] = "default",
          stemmer: Annotated[bool, Field(description="Porter stemming (default tokenizer only)")] = True,
          split: Annotated[bool, Field(description="split texts into sentences for ROUGE-Lsum")] = True,
          ) -> dict[str, list[float]]:
    """ROUGE-1/2/L/Lsum F1 per example (rouge-score, stemming; tokenizer default|whitespace|char)."""
    scorer = _scorer(tokenizer, stemmer)
    if tokenizer == "default":
        share = dropped_share(list(references) + list(predictions))
        if share > DROP_WARNING_SHARE:
            warnings.warn(f"rouge: the default tokenizer keeps only a-z and 0-9 and dropped {share:.0%} of the "
                          f"characters, so these scores are meaningless for this text; use the metric option "
                          f"rouge.tokenizer=whitespace (or char for Chinese/Japanese)", UserWarning, stacklevel=2)
    out: dict[str, list[float]] = {name: [] for name in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references, strict=True):
        if split:
            prediction, reference = split_sentences(prediction), split_sentences(reference)
        scores = scorer.score(reference, prediction)
        for name in ROUGE_TYPES:
            out[name].append(float(scores[name].fmeasure))
    return out


def describe(tokenizer: str = "default", stemmer: bool = True, split: bool = True) -> dict[str, str]:
    """How the scores were computed, for the report."""
    return {"definition": "rouge-score F-measure per example, mean over examples",
            "tokenizer": tokenizer, "stemmer": "porter" if stemmer and tokenizer == "default" else "none",
            "lsum_sentences": "split after . ! ? (one sentence per line)" if split else "as given"}


rouge.describe = describe
rouge.default_for = {"summarization": 1, "qa": 2, "generation": 1}
