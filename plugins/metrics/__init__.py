"""Built-in metrics: rouge, bleu, exact_match, accuracy, f1."""
from sftkit import hookimpl


@hookimpl
def register_metrics(register):
    """The built-in metrics."""
