"""A quiet terminal: only sftkit's own output, unless ``-v`` or ``SFTKIT_DEBUG=1``.

The libraries under sftkit print progress bars (transformers' "Loading weights", "Writing
model shards", "Converting and de-quantizing GGUF tensors"; huggingface_hub's and datasets'
downloads), log lines and deprecation warnings meant for the code that calls them, not for
a person training a model. ``quiet_libraries()`` (called by ``sftkit.cli`` before a command
runs) turns them off through the libraries' own switches:

- ``HF_HUB_DISABLE_PROGRESS_BARS``, ``HF_DATASETS_DISABLE_PROGRESS_BARS`` and
  ``TRANSFORMERS_VERBOSITY=error`` for libraries not imported yet (the CLI imports them
  lazily), and their ``disable_progress_bar`` / ``set_verbosity_error`` functions for those
  already imported;
- ``FutureWarning`` and ``DeprecationWarning``: notes on library APIs, for sftkit's developers;
- the ``UserWarning`` s in ``SILENCED_USER_WARNINGS``, which no setting of sftkit's can avoid.

Warnings a user can act on are said in sftkit's words by the command that causes them (the
trainer's notes), not silenced here. ``quiet_libraries(verbose=True)`` undoes all of it.
"""
from __future__ import annotations

import os
import sys
import warnings

QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
SILENCED_CATEGORIES = (FutureWarning, DeprecationWarning)
# (message regex, module regex): UserWarnings that say nothing a user of sftkit can change.
SILENCED_USER_WARNINGS: tuple[tuple[str, str], ...] = ()

_changed_env: dict[str, str | None] = {}
_filters_added: list[tuple] = []


def verbose_requested(verbose: bool = False) -> bool:
    """True when the libraries should speak: ``-v`` or ``SFTKIT_DEBUG=1``."""
    return verbose or os.environ.get("SFTKIT_DEBUG", "") not in ("", "0")


def quiet_libraries(verbose: bool = False) -> None:
    """Silence other libraries' progress bars, log lines and warnings a user cannot act on
    (or, with ``verbose`` / ``SFTKIT_DEBUG=1``, leave them as the libraries set them)."""
    if verbose_requested(verbose):
        _undo()
        return
    for name, value in QUIET_ENV.items():
        if name not in _changed_env and os.environ.get(name) != value:
            _changed_env[name] = os.environ.get(name)
            os.environ[name] = value
    _install_filters()
    _set_loaded_libraries(quiet=True)


def _install_filters() -> None:
    """The warning filters, (re)installed: ``warnings.catch_warnings`` blocks (pytest's, for one)
    restore the filter list when they end."""
    if _filters_added and all(item in warnings.filters for item in _filters_added):
        return
    _remove_filters()
    specs = [{"category": category} for category in SILENCED_CATEGORIES]
    specs += [{"message": message, "category": UserWarning, "module": module}
              for message, module in SILENCED_USER_WARNINGS]
    for spec in specs:
        warnings.filterwarnings("ignore", **spec)
        _filters_added.append(warnings.filters[0])


def _remove_filters() -> None:
    for item in _filters_added:
        if item in warnings.filters:
            warnings.filters.remove(item)
    _filters_added.clear()
    if hasattr(warnings, "_filters_mutated"):  # the C module caches the filter list's version
        warnings._filters_mutated()  # noqa: SLF001


def _undo() -> None:
    for name, old in _changed_env.items():
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
    _changed_env.clear()
    _remove_filters()
    _set_loaded_libraries(quiet=False)


def _set_loaded_libraries(quiet: bool) -> None:
    """The libraries' own switches, for those already imported (importing one costs seconds)."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if quiet:
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        else:
            hf_logging.set_verbosity_warning()
            hf_logging.enable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (disable_progress_bars if quiet else enable_progress_bars)()
    if "datasets" in sys.modules:
        from datasets.utils import logging as ds_logging

        (ds_logging.disable_progress_bar if quiet else ds_logging.enable_progress_bar)()
