"""Exact match in three modes, recorded in the report.

- ``strict``: equal after stripping leading and trailing whitespace (``"Paris\\n"`` equals
  ``"Paris"``; ``"paris"`` does not).
- ``normalised`` (default, SQuAD's normalisation): lowercase, remove punctuation, remove the
  articles a/an/the, squeeze whitespace; then equal.
- ``regex``: extract the first match of ``pattern`` (its first group if it has one) from the
  prediction and from the reference (a reference without a match is used whole), normalise
  both as above, then compare; a prediction without a match scores 0.
"""
from __future__ import annotations

import re
import string
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

MODES = ("strict", "normalised", "regex")
ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    """Lowercase, drop punctuation (ASCII and Unicode), drop a/an/the, squeeze whitespace."""
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _extract(pattern: re.Pattern, text: str) -> str | None:
    match = pattern.search(text or "")
    if match is None:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def _check(mode: str, pattern: str) -> re.Pattern | None:
    from sftkit import UsageError

    if mode not in MODES:
        raise UsageError(f"exact_match: unknown mode {mode!r}", hint=f"choose one of {', '.join(MODES)}")
    if mode != "regex":
        return None
    if not pattern:
        raise UsageError("exact_match: mode regex needs a pattern",
                         hint="e.g. --metric-option exact_match.pattern='answer is (\\w+)'")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"exact_match: bad pattern {pattern!r}: {exc}") from None


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"a regular expression ({exc})") from None
    return pattern


def exact_match(predictions: list[str], references: list[str],
                mode: Annotated[Literal[MODES], Field(description="strict: equal after stripping; normalised: "
                                                                  "SQuAD normalisation; regex: compare what "
                                                                  "pattern extracts")] = "normalised",
                pattern: Annotated[str, AfterValidator(_compiles), Field(
                    description="with mode regex: the regular expression whose first group (or match) is "
                                "compared")] = "") -> dict[str, list[float]]:
    """Exact match per example: mode strict | normalised (lowercase, no punctuation/articles) | regex."""
    compiled = _check(mode, pattern)
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    scores = []
    for prediction, reference in zip(predictions, references):
        prediction, reference = prediction or "", reference or ""
        if mode == "strict":
            scores.append(float(prediction.strip() == reference.strip()))
            continue
        if compiled is not None:
            extracted = _extract(compiled, prediction)
            if extracted is None:
                scores.append(0.0)
                continue
            prediction = extracted
            reference = _extract(compiled, reference) or reference
        scores.append(float(normalise(prediction) == normalise(reference)))
    return {"exact_match": scores}


def describe(mode: str = "normalised", pattern: str = "") -> dict[str, str]:
    """The mode, for the report (sftkit asks for it before any model loads: a regex mode without a
    pattern is refused there)."""
    _check(mode, pattern)
    definitions = {
        "strict": "equal after stripping surrounding whitespace",
        "normalised": "equal after lowercasing, removing punctuation and a/an/the, squeezing whitespace",
        "regex": f"first match of {pattern!r} in each text, then normalised and compared",
    }
    return {"mode": mode, "definition": definitions.get(mode, mode)}


exact_match.describe = describe
exact_match.default_for = {"classification": 3, "qa": 1, "generation": 3}
