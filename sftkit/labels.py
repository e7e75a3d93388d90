"""Map generated text to a classification label, and summarise the predictions.

A model rarely answers with the bare label: "Positive.", "neutral\\n", "The sentiment of this
sentence is negative." The text is normalised (lowercase, punctuation to spaces, whitespace
squeezed) and mapped by the first rule that applies:

1. ``exact``: the whole normalised text is a label;
2. ``prefix``: the text starts with a label ("positive the company ...");
3. ``mention``: exactly one label occurs as whole words anywhere in the text (a label
   contained in a longer matching label, "entailment" in "not entailment", does not count);
4. otherwise the output is ``invalid``: no label, or several different labels. Invalid
   outputs are their own class: never correct, a column of the confusion matrix, and listed.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from sftkit.errors import UsageError

INVALID = "(invalid)"
RULES = ("exact", "prefix", "mention", "invalid")


def normalise_text(text: str) -> str:
    """Lowercase, punctuation (any script) to spaces, whitespace squeezed."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Mapped:
    """The label an output maps to (``INVALID`` if none), the rule that decided, and why."""

    label: str
    rule: str
    reason: str = ""


class LabelMapper:
    """Maps generated text to one of ``labels`` (see the module docstring for the rules)."""

    def __init__(self, labels: Sequence[str]):
        labels = [str(label) for label in labels]
        if not labels:
            raise UsageError("classification needs labels", hint="list them under labels: in the dataset spec")
        if INVALID in labels:
            raise UsageError(f"the label {INVALID!r} is reserved for outputs that map to no label")
        self.labels = labels
        self.normalised = {}
        for label in labels:
            key = normalise_text(label)
            if not key:
                raise UsageError(f"label {label!r} is empty once normalised (lowercase, no punctuation)")
            if key in self.normalised:
                raise UsageError(f"labels {self.normalised[key]!r} and {label!r} are the same once normalised")
            self.normalised[key] = label
        # longest first, so "not entailment" wins over "entailment"
        self._patterns = [(key, re.compile(r"(?<!\w)" + re.escape(key) + r"(?!\w)"))
                          for key in sorted(self.normalised, key=len, reverse=True)]

    def map(self, text: str) -> Mapped:
        """The label for one generated text."""
        norm = normalise_text(text)
        if not norm:
            return Mapped(INVALID, "invalid", "empty output")
        if norm in self.normalised:
            return Mapped(self.normalised[norm], "exact")
        for key, _ in self._patterns:
            if norm.startswith(key + " "):
                return Mapped(self.normalised[key], "prefix")
        taken: list[tuple[int, int]] = []
        found: list[str] = []
        for key, pattern in self._patterns:
            for match in pattern.finditer(norm):
                span = match.span()
                if any(start <= span[0] and span[1] <= end for start, end in taken):
                    continue
                taken.append(span)
                if self.normalised[key] not in found:
                    found.append(self.normalised[key])
        if len(found) == 1:
            return Mapped(found[0], "mention")
        if not found:
            return Mapped(INVALID, "invalid", "no label in the output")
        return Mapped(INVALID, "invalid", "several labels: " + ", ".join(sorted(found)))

    def map_many(self, texts: Sequence[str]) -> list[Mapped]:
        """The labels for many texts."""
        return [self.map(text) for text in texts]


def classification_summary(predicted: Sequence[str], references: Sequence[str], labels: Sequence[str],
                           mapped: Sequence[Mapped] | None = None) -> dict:
    """Per-class precision/recall/F1/support and the confusion matrix (scikit-learn).

    Rows of the confusion matrix are the true labels, columns the predicted labels followed
    by the invalid class.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(labels)
    columns = labels + [INVALID]
    matrix = confusion_matrix(list(references), list(predicted), labels=columns)
    precision, recall, f1, support = precision_recall_fscore_support(
        list(references), list(predicted), labels=labels, average=None, zero_division=0)
    per_class = {
        label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    out = {
        "labels": labels,
        "columns": columns,
        "confusion": [[int(v) for v in row] for row in matrix[: len(labels)]],
        "per_class": per_class,
        "invalid": sum(1 for p in predicted if p == INVALID),
    }
    if mapped is not None:
        counts = Counter(m.rule for m in mapped)
        out["rules"] = {rule: counts.get(rule, 0) for rule in RULES}
    return out
