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
- ``FutureWarning`` and ``DeprecationWarning``: notes on library APIs, for sftkit's developers.

``UserWarning`` s are left alone: one may be something a user can act on, and none appears in
the commands' normal runs with the pinned libraries (a test checks preview, train, eval, export
and chat). What a user can act on, sftkit says in its own words (the trainer's notes, eval's
warnings). ``quiet_libraries(verbose=True)`` undoes all of it.
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

_changed_env: dict[str, str | None] = {}
_filters_added: list[tuple] = []


def verbose_requested(verbose: bool = False) -> bool:
    """True when the libraries should speak: ``-v`` or ``SFTKIT_DEBUG=1``."""
    from sftkit.registry import debug_enabled

    return verbose or debug_enabled()


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
    """The warning filters, put first in the list (``filterwarnings`` moves an equal filter to
    the front, so calling it again is harmless, and it restores filters that a
    ``warnings.catch_warnings`` block, pytest's for one, dropped when it ended)."""
    for category in SILENCED_CATEGORIES:
        warnings.filterwarnings("ignore", category=category)
        if warnings.filters[0] not in _filters_added:
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
