"""sftkit: validate, train and evaluate instruction-tuned language models.

The public API for plugin authors lives here: ``hookimpl``, the data types that flow along the
data path, and the errors to raise.
"""
from sftkit.errors import DataError, PluginError, SftkitError, UsageError
from sftkit.hookspecs import hookimpl
from sftkit.types import Example, Issue, Message, RenderContext, Result, Segment, TokenizedExample

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "Example",
    "Issue",
    "Message",
    "PluginError",
    "RenderContext",
    "Result",
    "Segment",
    "SftkitError",
    "TokenizedExample",
    "UsageError",
    "hookimpl",
    "__version__",
]
