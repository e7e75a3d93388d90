"""Shared fixtures: the real shared data (skipped with a reason when absent), the offline
tokenizer, tiny models, and an in-process CLI runner."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SFTKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "data"

os.environ.setdefault("SFTKIT_NO_PROGRESS", "1")
# Only the built-ins: third-party plugins installed in this environment must not change test results
# (tests that want one load it explicitly: tests/test_registry.py, tests/test_example_plugin.py).
os.environ.setdefault("SFTKIT_LOAD_PLUGINS", "")
# The test machines have no hub: fail fast instead of retrying the network for ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with a clear reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: tests on real data need ../shared/data beside the clone (CI has it)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The folder of real data, or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: tests on real data need ../shared/data beside the clone (CI has it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer():
    """The SmolLM2 tokenizer (offline; converted from the GGUF once and cached)."""
    from sftkit.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture
def fresh_tokenizer():
    """A SmolLM2 tokenizer a test may modify (special tokens added, ...)."""
    from sftkit.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture
def tiny_model():
    """A tiny random llama model (2 layers, hidden 64) sharing the SmolLM2 tokenizer."""
    from sftkit.models import load_model

    return load_model("tiny-random")


@pytest.fixture
def run_cli():
    """Run ``sftkit ARGS`` in-process; returns exit code, stdout and stderr (``sftkit.testing.run_cli``)."""
    from sftkit.testing import run_cli

    return run_cli
