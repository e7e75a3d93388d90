"""Testing helpers for plugin authors: pytest fixtures and one conformance check per kind.

sftkit installs this package as a pytest plugin (entry point group ``pytest11``), so in any
environment where sftkit is installed the fixtures below are available to every test without
an import:

- ``sftkit_registry``: a fresh registry holding only sftkit's built-ins, installed as the
  process-wide registry for one test (``sftkit.registry.set_registry``) and removed after it.
- ``register_plugin(plugin, name=...)``: add a plugin (a module or an object with
  ``@sftkit.hookimpl`` hooks) to that registry, exactly as an installed plugin is added.
- ``sftkit_cli(*args)``: run the ``sftkit`` command line in-process; it sees the registry above.
- ``tokenizer``: the offline test model's tokenizer (``tiny-random``, SmolLM2's), once per session.

The checks ``check_template``, ``check_masking_strategy``, ``check_loader``,
``check_validator``, ``check_metric``, ``check_reporter`` and ``check_generator`` call a component the way sftkit
does, on small sample inputs (or yours), and raise ``ConformanceError`` (an AssertionError)
listing every contract it breaks. They return what the component produced, so a test can
assert more. sftkit's own built-ins pass the same checks in sftkit's test suite.

The package, by concern: ``fixtures`` (the pytest fixtures), ``samples`` (sample inputs),
``common`` (what every check shares), and one module per kind's check (``templates``,
``masking``, ``loaders``, ``validators``, ``metrics``, ``reporters``, ``generators``). Import from
``sftkit.testing`` itself; the module layout may change.
"""
from __future__ import annotations

from sftkit.testing.common import CHECKS, ConformanceError, as_component
from sftkit.testing.fixtures import (CliResult, fresh_registry, register_plugin, run_cli, sftkit_cli,
                                     sftkit_registry, tokenizer)
from sftkit.testing.generators import GeneratorUnavailable, check_generator, varied_tiny_model
from sftkit.testing.loaders import check_loader
from sftkit.testing.masking import check_masking_strategy
from sftkit.testing.metrics import check_metric
from sftkit.testing.reporters import check_reporter
from sftkit.testing.samples import XSS, sample_examples, sample_results
from sftkit.testing.templates import check_template
from sftkit.testing.validators import check_validator, validation_context

__all__ = [
    "CHECKS",
    "ConformanceError",
    "XSS",
    "as_component",
    "check_generator",
    "check_loader",
    "check_masking_strategy",
    "check_metric",
    "check_reporter",
    "check_template",
    "check_validator",
    "CliResult",
    "fresh_registry",
    "GeneratorUnavailable",
    "register_plugin",
    "run_cli",
    "sample_examples",
    "sample_results",
    "sftkit_cli",
    "sftkit_registry",
    "tokenizer",
    "validation_context",
    "varied_tiny_model",
]
