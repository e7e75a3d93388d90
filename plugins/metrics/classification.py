"""Accuracy and F1 with scikit-learn.

For classification data sftkit passes the *mapped labels* as predictions (generated text
normalised and mapped to one of the spec's labels; an output that maps to no label is the
invalid class, which never equals a reference). ``accuracy`` is the share of exact matches
of the stripped strings. ``f1`` computes macro and weighted F1 with an explicit ``average``
over ``labels`` (the spec's labels, passed by sftkit; default: every label seen in the
references), ``zero_division=0``; invalid predictions lower the recall of their true class.
Its per-example score is correctness (1/0): F1 is a corpus statistic.
"""
from __future__ import annotations

from typing import Annotated, Literal

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where used: `sftkit plugins` stays light
    import numpy as np
from pydantic import Field

AVERAGES = ("macro", "weighted", "micro")


def _clean(values: list[str]) -> list[str]:
    return [("" if v is None else str(v)).strip() for v in values]


def accuracy(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Share of predictions equal to the reference (stripped strings; classification: mapped labels)."""
    preds, refs = _clean(predictions), _clean(references)
    if len(preds) != len(refs):
        raise ValueError("predictions and references differ in length")
    return {"accuracy": [float(p == r) for p, r in zip(preds, refs)]}


def _averages(average: list[str] | tuple[str, ...] | str) -> list[str]:
    names = [a.strip() for a in (average.split(",") if isinstance(average, str) else average) if a.strip()]
    bad = [a for a in names if a not in AVERAGES]
    if bad or not names:
        from sftkit import UsageError

        raise UsageError(f"f1: unknown average {', '.join(bad) or '(none)'}", hint=f"choose from {', '.join(AVERAGES)}")
    return names


def _labels(references: list[str], labels) -> list[str]:
    chosen = [str(x).strip() for x in (labels or []) if str(x).strip()]
    return chosen or sorted(set(references))


def f1(predictions: list[str], references: list[str],
       average: Annotated[list[Literal[AVERAGES]], Field(min_length=1, description="the averages computed, "
                                                                                   "comma-separated")] = ("macro",
                                                                                                          "weighted"),
       labels: Annotated[list[str], Field(description="the classes averaged over (default: the spec's labels, else "
                                                      "those in the references)")] = ()) -> dict[str, list[float]]:
    """Macro and weighted F1 (scikit-learn, explicit average) over the labels; per example: correct or not."""
    preds, refs = _clean(predictions), _clean(references)
    if len(preds) != len(refs):
        raise ValueError("predictions and references differ in length")
    correct = [float(p == r) for p, r in zip(preds, refs)]
    return {f"f1_{name}": list(correct) for name in _averages(average)}


def aggregate(predictions: list[str], references: list[str], average: list = ("macro", "weighted"),
              labels: list = ()) -> dict[str, float]:
    """scikit-learn ``f1_score`` with each explicit average."""
    from sklearn.metrics import f1_score

    preds, refs = _clean(predictions), _clean(references)
    chosen = _labels(refs, labels)
    return {f"f1_{name}": float(f1_score(refs, preds, labels=chosen, average=name, zero_division=0))
            for name in _averages(average)}


def resampled(predictions: list[str], references: list[str], indices: np.ndarray,
              average: list = ("macro", "weighted"), labels: list = ()) -> dict[str, np.ndarray]:
    """F1 on every bootstrap resample, vectorised from per-class counts (equals ``f1_score``)."""
    import numpy as np
    preds, refs = _clean(predictions), _clean(references)
    chosen = _labels(refs, labels)
    code = {label: i for i, label in enumerate(chosen)}
    k = len(chosen)
    ref_codes = np.array([code.get(r, k) for r in refs])
    pred_codes = np.array([code.get(p, k + 1) for p in preds])
    out = {}
    # counts per resample and class: true positives, predicted, actual (support)
    r, p = ref_codes[indices], pred_codes[indices]
    tp = np.stack([((r == c) & (p == c)).sum(axis=1) for c in range(k)], axis=1).astype(float)
    predicted = np.stack([(p == c).sum(axis=1) for c in range(k)], axis=1).astype(float)
    support = np.stack([(r == c).sum(axis=1) for c in range(k)], axis=1).astype(float)
    denom = predicted + support
    per_class = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    for name in _averages(average):
        if name == "macro":
            out[f"f1_{name}"] = per_class.mean(axis=1)
        elif name == "weighted":
            total = support.sum(axis=1, keepdims=True)
            weights = np.divide(support, total, out=np.zeros_like(support), where=total > 0)
            out[f"f1_{name}"] = (per_class * weights).sum(axis=1)
        else:  # micro over the chosen labels
            tps, pr, su = tp.sum(axis=1), predicted.sum(axis=1), support.sum(axis=1)
            out[f"f1_{name}"] = np.divide(2 * tps, pr + su, out=np.zeros_like(tps), where=(pr + su) > 0)
    return out


def describe_f1(average: list = ("macro", "weighted"), labels: list = ()) -> dict[str, str]:
    """The averages and labels used, for the report."""
    return {"definition": "scikit-learn f1_score, zero_division=0; per-example: correct (1/0)",
            "average": ", ".join(_averages(average)), "labels": ", ".join(str(x) for x in labels) or "from references"}


def describe_accuracy() -> dict[str, str]:
    """The definition, for the report."""
    return {"definition": "share of predictions equal to the reference (stripped; classification: mapped labels)"}


f1.aggregate = aggregate
f1.resampled = resampled
f1.describe = describe_f1
# for classification data sftkit passes the mapped labels, not the generated text
f1.input = "label"
accuracy.input = "label"
accuracy.describe = describe_accuracy
# the default metrics for classification data, and the figures that headline its report
accuracy.default_for = {"classification": 1}
f1.default_for = {"classification": 2}
accuracy.headline = ("accuracy",)
f1.headline = ("f1_macro",)
