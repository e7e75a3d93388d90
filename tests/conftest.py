"""Shared fixtures: the real shared data (skipped with a reason when absent), the offline
tokenizer, tiny models, and an in-process CLI runner."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SFTKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "data"

os.environ.setdefault("SFTKIT_NO_PROGRESS", "1")
# One torch thread per test process: the suite runs on several workers, and results must not
# depend on the load average (sftkit.threads would otherwise follow it).
os.environ.setdefault("SFTKIT_THREADS", "1")
# Only the built-ins: third-party plugins installed in this environment must not change test results
# (tests that want one load it explicitly: tests/test_registry.py, tests/test_example_plugin.py).
os.environ.setdefault("SFTKIT_LOAD_PLUGINS", "")
# The test machines have no hub: fail fast instead of retrying the network for ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The encoded-data cache of `sftkit train` (sftkit.train.cache) in a temporary folder per test
# session, so a cache left by an earlier session never changes what a test tokenizes.
if "SFTKIT_DATA_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["SFTKIT_DATA_CACHE"] = tempfile.mkdtemp(prefix="sftkit-test-data-cache-")
    atexit.register(shutil.rmtree, os.environ["SFTKIT_DATA_CACHE"], True)


def required(variable: str) -> bool:
    """True when ``variable`` is set: a test that would skip fails instead (CI sets these)."""
    return os.environ.get(variable, "") not in ("", "0")


def skip_or_fail(reason: str, variable: str) -> None:
    """Skip with ``reason``, or fail when ``variable`` says the resource is required here."""
    if required(variable):
        pytest.fail(f"{reason} (and {variable}=1 says it must be here)")
    pytest.skip(reason)


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with a clear reason (fail with SFTKIT_REQUIRE_SHARED_DATA=1)."""
    path = SHARED_DATA / name
    if not path.exists():
        skip_or_fail(f"{path} is absent: tests on real data need ../shared/data beside the clone (CI has it)",
                     "SFTKIT_REQUIRE_SHARED_DATA")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The folder of real data, or skip (fail with SFTKIT_REQUIRE_SHARED_DATA=1)."""
    if not SHARED_DATA.is_dir():
        skip_or_fail(f"{SHARED_DATA} is absent: tests on real data need ../shared/data beside the clone (CI has it)",
                     "SFTKIT_REQUIRE_SHARED_DATA")
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


# -- the data path from a test: a DataRequest from keyword fields ---------------------------------

def data_request(path, **fields):
    """A ``DataRequest`` for ``path``; ``columns`` may be given as ``["output=label", ...]``."""
    from sftkit.pipeline import DataRequest

    columns = fields.pop("columns", {})
    if not isinstance(columns, dict):
        columns = dict(item.split("=", 1) for item in columns)
    return DataRequest(str(path), columns=columns, **fields)


def open_examples(path, skipped=None, **fields):
    """``(spec, note, examples)`` of a file read as the commands read it; broken lines left out
    with ``skip_invalid=True`` are appended to ``skipped`` once the examples are read."""
    from sftkit.pipeline import open_data

    opened = open_data(data_request(path, **fields))

    def examples():
        yield from opened.examples()
        if skipped is not None:
            skipped.extend(opened.skipped)

    return opened.spec, opened.note, examples()


def read_records(path, skipped=None, **fields):
    """The raw records of a file, through the loader the commands would choose (broken lines left
    out with ``skip_invalid=True`` are appended to ``skipped``)."""
    from sftkit.pipeline import load_records

    return load_records(data_request(path, **fields), skipped=skipped)


def prepared_for(path, *, model=None, tokenizer=None, **fields):
    """``sftkit.pipeline.prepare`` with the DataRequest and RenderSettings fields as keywords."""
    import dataclasses

    from sftkit.pipeline import RenderSettings, prepare

    render_keys = {f.name for f in dataclasses.fields(RenderSettings)}
    render = RenderSettings(model=model, **{k: v for k, v in fields.items() if k in render_keys})
    request = data_request(path, **{k: v for k, v in fields.items() if k not in render_keys})
    return prepare(request, render, tokenizer=tokenizer)


def validate_file(path, *, eval_data=None, **fields):
    """``run_validation`` on a file, with prepare's and ValidationSettings' fields as keywords."""
    import dataclasses

    from sftkit.validation import ValidationSettings, run_validation

    setting_keys = {f.name for f in dataclasses.fields(ValidationSettings)}
    settings = ValidationSettings(**{k: (tuple(v) if k in ("only", "skip") else v)
                                     for k, v in fields.items() if k in setting_keys})
    prepared = prepared_for(path, **{k: v for k, v in fields.items() if k not in setting_keys})
    evals = prepared.more(prepared.data.request.for_path(eval_data)) if eval_data else None
    return run_validation(prepared, settings, eval_data=evals)


def squash(text: str) -> str:
    """Output without whitespace (Rich wraps long messages at the terminal width)."""
    return re.sub(r"\s+", "", text)


def assert_one_clean_error(result, *fragments: str) -> None:
    """Exit 2 with exactly one error line holding every fragment, and no traceback."""
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert result.stderr.count("error:") == 1, output
    flat = squash(result.stderr)
    for fragment in fragments:
        assert squash(fragment) in flat, (fragment, result.stderr)
