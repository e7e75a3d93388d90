"""The pytest fixtures for plugin authors: a fresh registry, a plugin registered into it, the
sftkit command line run in-process, and the test tokenizer."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from sftkit.registry import PluginStatus, Registry, set_registry
from sftkit.testing.common import ConformanceError


def fresh_registry(*, entry_points: bool = False) -> Registry:
    """A new registry with sftkit's built-ins (and, if asked, the installed third-party plugins)."""
    registry = Registry()
    registry.load_builtins()
    if entry_points:
        registry.load_entry_points()
    return registry


@pytest.fixture
def sftkit_registry():
    """A fresh registry of the built-ins, installed process-wide for one test, then removed."""
    import sftkit.registry as registry_module

    previous = registry_module._REGISTRY
    registry = fresh_registry()
    set_registry(registry)
    try:
        yield registry
    finally:
        set_registry(previous)


@pytest.fixture
def register_plugin(sftkit_registry):
    """``register_plugin(plugin, name="test_plugin", strict=True) -> PluginStatus`` for one test.

    The plugin is added as a third-party plugin (version ``"test"``), so its mistakes are
    recorded as they would be for an installed one; with ``strict=True`` (the default) a
    plugin that fails to register fails the test with sftkit's error message.
    """

    def register(plugin: Any, name: str = "test_plugin", *, version: str = "test", strict: bool = True) -> PluginStatus:
        status = sftkit_registry.add_plugin(plugin, name=name, version=version, builtin=False)
        if strict and not status.ok:
            raise ConformanceError(f"plugin {name} failed to register: {status.error}")
        return status

    return register


@pytest.fixture(scope="session")
def tokenizer():
    """The tokenizer of sftkit's offline test model ``tiny-random`` (SmolLM2's, offline), loaded
    once per session: pass it to ``check_template(..., tokenizer=tokenizer)`` or
    ``validation_context(..., tokenizer=tokenizer)``. Shared by every test, so do not modify it;
    ``sftkit.models.load_tokenizer("tiny-random")`` gives a fresh one a test may change."""
    from sftkit.models import TINY, load_tokenizer

    return load_tokenizer(TINY)


@dataclass
class CliResult:
    """What ``sftkit_cli`` returns."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON (for ``--json`` / ``--format json`` output)."""
        return json.loads(self.stdout)


@pytest.fixture
def sftkit_cli():
    """``sftkit_cli(*args, env=None) -> CliResult``: run the sftkit CLI in-process."""
    return run_cli


def run_cli(*args: Any, env: dict | None = None) -> CliResult:
    """Run ``sftkit ARGS`` in this process, capturing exit code, stdout and stderr."""
    from click.testing import CliRunner

    from sftkit.cli import main

    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _mixed):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        stdout = out.getvalue().decode("utf-8", "replace")
        stderr = err.getvalue().decode("utf-8", "replace")
    return CliResult(code, stdout, stderr)
