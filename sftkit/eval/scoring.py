"""Scoring an evaluation: metric plugins resolved before any model loads, per-example scores,
aggregates with percentile bootstrap intervals, and paired differences between two models.

Which metrics run by default, and which figures headline the report, is declared by the metric
plugins themselves (their ``default_for`` and ``headline`` attributes), never named here.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sftkit.errors import UsageError


@dataclass
class Metric:
    """A metric plugin bound to the user's options (checked before any model loads)."""

    name: str
    bound: Callable  # the component with its options; a crash is blamed on its plugin

    @property
    def component(self) -> Any:
        return self.bound.component

    @property
    def options(self) -> dict:
        return dict(self.bound.options)

    @property
    def wants_labels(self) -> bool:
        """Metrics scored on mapped labels for classification data (accuracy, f1)."""
        return self.component.attribute("input", "text") == "label"

    def has(self, attribute: str) -> bool:
        return self.component.attribute(attribute) is not None

    def call(self, attribute: str | None, *args: Any) -> Any:
        """The metric (or one of its optional attributes) with the user's options."""
        if attribute is None:
            return self.bound(*args)
        return self.component.attribute(attribute)(*args, **self.options)

    def headline(self) -> tuple[str, ...]:
        return tuple(self.component.attribute("headline") or ())


@dataclass
class ModelRun:
    """One model's outputs on the evaluation rows."""

    role: str
    name: str
    run_info: dict | None
    texts: list[str]
    generations: list[Any]
    seconds: float
    labels: list[Any] | None = None  # mapped, for classification
    scores: dict[str, list[float]] = field(default_factory=dict)

    def predictions_for(self, metric: Metric, classification: bool) -> list[str]:
        if classification and metric.wants_labels and self.labels is not None:
            return [m.label for m in self.labels]
        return self.texts


def resolve_metrics(names: list[str] | None, task: str, options: Mapping[str, Mapping], registry: Any,
                    labels: list[str] | None = None) -> list[Metric]:
    """The metrics to compute (``names``, else the defaults the metric plugins declare for
    ``task``), each bound to its options; unknown names and options are rejected here.

    For classification (``labels`` given), a metric with an option ``labels`` that the user did
    not set receives the spec's labels.
    """
    names = list(names) if names else registry.defaults_for_task("metrics", task)
    if not names:
        raise UsageError(f"no metric declares itself a default for task {task!r}", hint="choose with --metrics a,b")
    unknown_targets = sorted(set(options) - set(names))
    if unknown_targets:
        raise UsageError(f"--metric-option names metric(s) not being computed: {', '.join(unknown_targets)}",
                         hint=f"metrics: {', '.join(names)}")
    out = []
    for name in names:
        component = registry.get("metrics", name)
        chosen = dict(options.get(name, {}))
        if labels is not None and "labels" in component.options() and "labels" not in chosen:
            chosen["labels"] = list(labels)
        out.append(Metric(name, component.bind(chosen)))
    return out


def headline_subs(metrics: list[Metric], table: dict) -> list[str]:
    """The sub-metrics that headline the report: those the metrics declare, else the first."""
    declared = [sub for metric in metrics for sub in metric.headline() if sub in table]
    return declared or list(table)[:1]


def score(metrics: list[Metric], runs: dict[str, ModelRun], references: list[str], classification: bool,
          *, resamples: int, seed: int, confidence: float, reference: str | None = None) -> tuple[dict, list[dict]]:
    """Per-example scores, aggregates, intervals and paired differences; and metric warnings.

    Two models ``base`` and ``tuned``: ``difference`` (tuned - base). With ``reference`` (N-way):
    ``comparisons``, each other model minus the reference, all on the same resamples, their
    p-values Holm-adjusted (``p_holm``) across the comparisons of each sub-metric."""
    from sftkit import stats

    indices = stats.resample_indices(len(references), resamples, seed)
    table: dict[str, dict] = {}
    notes: list[dict] = []
    for metric in metrics:
        values: dict[str, dict[str, float]] = {}
        replicates: dict[str, dict[str, Any]] = {}
        corpus: set[str] = set()
        for role, run in runs.items():
            predictions = run.predictions_for(metric, classification)
            for sub, (value, reps, whole) in _score_one(metric, run, predictions, references, indices, notes).items():
                values.setdefault(sub, {})[role] = value
                replicates.setdefault(sub, {})[role] = reps
                if whole:
                    corpus.add(sub)
        for sub in values:
            entry: dict[str, Any] = {"metric": metric.name, "aggregate": "corpus" if sub in corpus else "mean"}
            for role in runs:
                entry[role] = stats.interval(values[sub][role], replicates[sub][role], confidence).to_dict()
            if reference is not None:
                entry["comparisons"] = _comparisons(values[sub], replicates[sub], reference, confidence)
            elif "base" in runs and "tuned" in runs:
                entry["difference"] = stats.paired_difference(
                    values[sub]["base"], values[sub]["tuned"], replicates[sub]["base"], replicates[sub]["tuned"],
                    confidence).to_dict()
            table[sub] = entry
    return table, notes


def _comparisons(values: dict[str, float], replicates: dict[str, Any], reference: str,
                 confidence: float) -> dict[str, dict]:
    """Each model minus the reference (paired, the same resamples), with Holm-adjusted p-values."""
    from sftkit import stats

    others = [role for role in values if role != reference]
    diffs = [stats.paired_difference(values[reference], values[role], replicates[reference], replicates[role],
                                     confidence) for role in others]
    adjusted = stats.holm([d.p_value for d in diffs])
    alpha = 1.0 - confidence
    return {role: {**d.to_dict(), "p_holm": p, "significant_holm": bool(p < alpha)}
            for role, d, p in zip(others, diffs, adjusted)}


def _score_one(metric: Metric, run: ModelRun, predictions: list[str], references: list[str], indices: Any,
               notes: list[dict]) -> dict[str, tuple[float, Any, bool]]:
    """One model's scores under one metric: ``{sub: (aggregate, bootstrap replicates, is a corpus
    aggregate)}``; the
    per-example scores go into ``run.scores``, the metric's own warnings into ``notes``."""
    import numpy as np

    from sftkit import stats

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_example = metric.call(None, predictions, references)
        aggregate = metric.call("aggregate", predictions, references) if metric.has("aggregate") else {}
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            notes.append({"model": run.role, "code": f"metric_{metric.name}", "rows": [],
                          "message": f"{run.role}: {warning.message}"})
    fast = metric.call("resampled", predictions, references, indices) if metric.has("resampled") else {}
    out = {}
    for sub, scores in per_example.items():
        scores = [float(s) for s in scores]
        run.scores[sub] = scores
        if sub in aggregate:
            reps = fast.get(sub)
            if reps is None:
                def statistic(rows, sub=sub):
                    return metric.call("aggregate", [predictions[i] for i in rows], [references[i] for i in rows])[sub]
                reps = stats.statistic_replicates(statistic, indices)
            out[sub] = (float(aggregate[sub]), np.asarray(reps, dtype=float), True)
        else:
            out[sub] = (float(np.mean(scores)), np.asarray(stats.mean_replicates(scores, indices), dtype=float), False)
    return out


def describe_metrics(metrics: list[Metric]) -> dict[str, dict]:
    """Each metric's options and settings (BLEU signature, exact-match mode, ...)."""
    out = {}
    for metric in metrics:
        info = {"options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in metric.options.items()}}
        if metric.has("describe"):
            info.update(metric.call("describe"))
        out[metric.name] = info
    return out


def sanity_warnings(run: ModelRun, max_new_tokens: int) -> list[dict]:
    """Empty generations, every prediction identical, generations that never stopped."""
    out = []
    rows = len(run.texts)
    empty = [i for i, t in enumerate(run.texts) if not t.strip()]
    if empty:
        out.append({"model": run.role, "code": "empty_generations", "rows": empty,
                    "message": f"{run.role}: {len(empty)} of {rows} generations are empty"})
    if rows > 1 and len(set(run.texts)) == 1:
        out.append({"model": run.role, "code": "identical_predictions", "rows": [],
                    "message": f"{run.role}: all {rows} predictions are identical ({run.texts[0][:60]!r})"})
    limit = [i for i, g in enumerate(run.generations) if g.hit_limit]
    if limit:
        out.append({"model": run.role, "code": "hit_max_new_tokens", "rows": limit,
                    "message": f"{run.role}: {len(limit)} of {rows} generations hit --max-new-tokens {max_new_tokens} "
                               f"without stopping (raise it, or the model does not stop at the end of turn)"})
    return out
