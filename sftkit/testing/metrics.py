"""The conformance check of metrics."""
from __future__ import annotations

import math
from typing import Any, Sequence

from sftkit.testing.common import Problems, call, finite_number, start_check


def check_metric(
    metric: Any,
    *,
    predictions: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    options: dict | None = None,
) -> dict[str, list[float]]:
    """Check a metric returns one finite score per example under each sub-metric name.

    Also: a single example works, the inputs are not modified, the same scores come back
    twice. Optional attributes: ``aggregate`` returns finite floats for known sub-metrics;
    ``resampled`` gives, for each row of resample indices (permutations here), what
    ``aggregate`` (or the mean of the per-example scores) gives on that resample; ``describe`` returns a dict of strings;
    ``input`` is "text" or "label". Returns the scores.
    """
    component, problems, bound = start_check("metrics", metric, options)
    if predictions is None:
        predictions = ["positive", "The cat sat on the mat.", "", "Ünïcödé text 😀 <b>x</b>"]
        references = ["positive", "A cat was sitting on the mat.", "negative", "Ünïcödé text 😀"]
    predictions, references = list(predictions), list(references or [])
    scores = None
    for preds, refs, what in ((predictions, references, "the samples"), (predictions[:1], references[:1], "one example")):
        saved = (list(preds), list(refs))
        ok, result = call(problems, f"scoring {what}", bound, preds, refs)
        if not ok:
            continue
        if (preds, refs) != saved:
            problems.add("the metric modified its inputs")
        if not isinstance(result, dict) or not result:
            problems.add(f"scoring {what} returned {type(result).__name__}, expected a non-empty "
                         "dict {sub_metric: [score per example]}")
            continue
        for key, values in result.items():
            if not isinstance(key, str):
                problems.add(f"sub-metric name {key!r} is not a string")
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != len(preds):
                problems.add(f"{key}: expected a list of {len(preds)} scores (one per example), got {values!r:.80}")
            elif not all(finite_number(v) for v in values):
                problems.add(f"{key}: scores must be finite numbers, got {list(values)!r:.80}")
        if scores is None:
            scores = result
            ok, again = call(problems, "scoring the samples a second time", bound, list(preds), list(refs))
            if ok and again != result:
                problems.add("two calls on the same inputs gave different scores (a metric must be deterministic)")
    coerced = dict(getattr(bound, "options", {}))
    aggregate = getattr(component.func, "aggregate", None)
    if aggregate is not None:
        ok, totals = call(problems, "aggregate", lambda p, r: aggregate(p, r, **coerced), predictions, references)
        if ok:
            if not isinstance(totals, dict) or not all(finite_number(v) for v in totals.values()):
                problems.add(f"aggregate must return a dict of finite floats, got {totals!r:.80}")
                aggregate = None
            elif scores is not None and not set(totals) <= set(scores):
                problems.add(f"aggregate keys {sorted(totals)} are not among the per-example keys {sorted(scores)}")
    resampled = getattr(component.func, "resampled", None)
    if resampled is not None and scores is not None:
        _check_resampled(resampled, aggregate, bound, coerced, predictions, references, problems)
    describe = getattr(component.func, "describe", None)
    if describe is not None:
        ok, info = call(problems, "describe", lambda: describe(**coerced))
        if ok and not (isinstance(info, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in info.items())):
            problems.add(f"describe must return a dict of strings (settings for the report), got {info!r:.80}")
    if getattr(component.func, "input", "text") not in ("text", "label"):
        problems.add(f"attribute input must be 'text' or 'label', got {component.func.input!r}")
    problems.check()
    return scores or {}


def _check_resampled(resampled, aggregate, bound, options, predictions, references, problems: Problems) -> None:
    """``resampled`` (the fast bootstrap path) must equal the slow path on each resample.

    The resamples are permutations of the rows: a metric may fix settings derived from the
    whole data (F1's label set) for every resample, so a resample that leaves rows out may
    legitimately differ from scoring it alone.
    """
    import numpy as np

    n = len(predictions)
    indices = np.array([list(range(n)), list(reversed(range(n))), [(i + 1) % n for i in range(n)]])
    ok, reps = call(problems, "resampled", lambda: resampled(predictions, references, indices, **options))
    if not ok:
        return
    if not isinstance(reps, dict):
        problems.add(f"resampled must return a dict {{sub_metric: one value per resample}}, got {type(reps).__name__}")
        return
    for key, values in reps.items():
        values = np.asarray(values, dtype=float)
        if values.shape != (len(indices),):
            problems.add(f"resampled[{key!r}] has shape {values.shape}, expected ({len(indices)},): one per resample")
            continue
        for r, rows in enumerate(indices):
            preds, refs = [predictions[i] for i in rows], [references[i] for i in rows]
            if aggregate is not None and key in (totals := aggregate(preds, refs, **options)):
                expected = float(totals[key])
            else:
                expected = float(np.mean(bound(preds, refs)[key]))
            if not math.isclose(values[r], expected, rel_tol=1e-6, abs_tol=1e-9):
                problems.add(f"resampled[{key!r}] is {float(values[r])!r} on resample {[int(i) for i in rows]}, "
                             f"but scoring that resample directly gives {expected!r}")
                break
