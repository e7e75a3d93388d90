"""Property: any spec YAML, of any shape, is a result or one clear message, never a bug.

Arbitrary mappings of spec keys (and a few unknown ones) to values of every YAML shape
(null, booleans, numbers, text that names real formats, tasks, templates, loaders and
severities, lists, mappings, nested mappings) are written as a spec file and run through
``sftkit validate --no-tokenizer --spec FILE``: the exit code is 0 or 1 (validated) or 2
(one message naming the spec), never 3 ("internal error"), and there is no traceback.
Arbitrary text as a spec file is held to the same rule.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftkit.spec import FORMATS, SEVERITY_LEVELS, SPEC_KEYS, TASKS
from sftkit.testing import run_cli

DATA = Path(__file__).resolve().parent / "data" / "bad" / "bom.jsonl"

# Words a spec could plausibly hold, so that some values are valid and reach deeper checks.
WORDS = st.sampled_from(list(FORMATS) + list(TASKS) + list(SEVERITY_LEVELS) + [
    "alpaca", "chatml", "plain", "jsonl", "csv", "parquet", "hf_disk", "json", "instruction", "input", "output",
    "label", "messages", "system", "task", "quality", "schema", "balance", "consistency", "leakage", "min_length",
    "encoding_errors", "replace", "strict", "delimiter", "batch_size", "exact_duplicate", "empty_output",
    "conflicting_labels", "", " ", "x", "\x1b[2J", "on", "yes", "2024-13-01", "1e400", "-1", "0",
])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), WORDS, st.text(max_size=12))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(WORDS, st.text(max_size=6), st.integers(), st.booleans()),
                                            inner, max_size=4)),
    max_leaves=12,
)
KEYS = st.one_of(st.sampled_from(SPEC_KEYS), st.sampled_from(SPEC_KEYS), st.sampled_from(["formt", "colums", "x"]))
SPECS = st.dictionaries(KEYS, VALUES, max_size=8)

# Values of the right shape for each key (often valid, sometimes not by value), so that many
# specs get past the shape checks and are used: columns mapped, validators and loaders run.
FIELD = st.sampled_from(["instruction", "input", "output", "system", "label", "task", "messages"])
OPTION_VALUE = st.one_of(SCALARS, st.lists(SCALARS, max_size=2))
GOOD = {
    "name": WORDS, "description": st.text(max_size=20), "format": st.sampled_from(FORMATS), "task": st.sampled_from(TASKS),
    "columns": st.dictionaries(FIELD, st.one_of(st.none(), WORDS), max_size=3),
    "instruction": st.one_of(st.none(), st.text(max_size=20)), "system": st.one_of(st.none(), st.text(max_size=20)),
    "labels": st.lists(st.one_of(WORDS, st.integers(-5, 5)), max_size=4),
    "template": st.one_of(st.none(), st.sampled_from(["alpaca", "chatml", "plain", "simple", "nope"])),
    "constraints": st.dictionaries(FIELD, st.dictionaries(st.sampled_from(["min_length", "max_length"]),
                                                          st.one_of(st.integers(-2, 5), WORDS), max_size=2), max_size=2),
    "validators": st.dictionaries(st.sampled_from(["quality", "schema", "consistency", "nope"]),
                                  st.dictionaries(st.sampled_from(["min_output_chars", "near_duplicates", "pii", "x"]),
                                                  OPTION_VALUE, max_size=2), max_size=2),
    "severity": st.dictionaries(st.sampled_from(["exact_duplicate", "empty_output", "mixed_formats", "nope"]),
                                st.one_of(st.sampled_from(SEVERITY_LEVELS), st.booleans(), WORDS), max_size=3),
    "loader": st.one_of(st.none(), st.sampled_from(["jsonl", "json", "csv", "tsv", "parquet", "hf_disk", "nope"])),
    "loader_options": st.dictionaries(st.sampled_from(["encoding_errors", "max_line_bytes", "delimiter", "x"]),
                                      OPTION_VALUE, max_size=2),
    "source": WORDS,
}
WELL_SHAPED = st.fixed_dictionaries({}, optional={key: GOOD[key] for key in SPEC_KEYS})


CODES: list[int] = []


def _check(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "spec.yaml"
        spec.write_text(text, "utf-8")
        result = run_cli("validate", DATA, "--no-tokenizer", "--spec", spec, "--report-dir", Path(folder) / "r",
                         "--only", "schema,quality,consistency")
    output = result.stdout + result.stderr
    CODES.append(result.exit_code)
    assert result.exit_code in (0, 1, 2), f"exit {result.exit_code} for the spec:\n{text}\n{output}"
    assert "Traceback" not in output and "internal error" not in output, f"{text}\n{output}"
    if result.exit_code == 2:  # one error line (a spec named "error" makes "spec error:" inside it)
        assert sum(line.startswith("error:") for line in output.splitlines()) == 1, output


@given(SPECS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_spec_mapping_is_a_result_or_one_message(data):
    _check(yaml.safe_dump(data, allow_unicode=True))


@given(WELL_SHAPED)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_well_shaped_spec_is_a_result_or_one_message(data):
    _check(yaml.safe_dump(data, allow_unicode=True))


@given(st.text(max_size=200))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_as_a_spec_is_a_result_or_one_message(text):
    _check(text)
