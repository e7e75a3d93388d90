"""Built-in metrics: rouge, bleu, exact_match, accuracy, f1, and evaluate (a local Hugging Face
``evaluate`` module as a metric).

Each metric returns one score per example per sub-metric; ``aggregate`` (corpus-level
metrics), ``resampled`` (fast bootstrap replicates) and ``describe`` (settings for the report)
are optional attributes.
"""
from sftkit import hookimpl
from sftkit.plugins.metrics.bleu_metric import bleu
from sftkit.plugins.metrics.classification import accuracy, f1
from sftkit.plugins.metrics.evaluate_metric import evaluate_module
from sftkit.plugins.metrics.exact import exact_match
from sftkit.plugins.metrics.rouge_metric import rouge


@hookimpl
def register_metrics(register):
    """The built-in metrics."""
    register(rouge)
    register(bleu)
    register(exact_match)
    register(accuracy)
    register(f1)
    register(evaluate_module, name="evaluate")
