"""The validation engine: chunked storage gives the same findings as one chunk, and the
context/result plumbing (validator selection, bad validator output, result layout)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit import Example, Issue, PluginError, UsageError
from sftkit.spec import load_spec
from conftest import validate_file
from sftkit.store import ExampleStore
from sftkit.validation import failed, resolve_validators

CLEAN = Path(__file__).parent / "data" / "validate" / "clean.jsonl"


def test_store_keeps_rows_in_chunks():
    store = ExampleStore(chunk_rows=3)
    for row in range(10):
        store.add(Example(instruction=f"q{row}", output=f"a{row}", row=row), {"output": f"a{row}"}, "instruction,output")
    assert len(store) == 10
    assert [c.start for c in store.chunks()] == [0, 3, 6, 9]
    assert [e.row for e in store] == list(range(10))
    assert [store.get(r).output for r in (7, 1, 9, 0)] == ["a7", "a1", "a9", "a0"]
    assert store.memory_bytes() > 0  # three chunks are held pickled
    with pytest.raises(IndexError):
        store.get(10)


def test_small_chunks_find_the_same_issues(tmp_path, tokenizer):
    rows = [json.loads(line) for line in CLEAN.read_text("utf-8").splitlines()]
    text = ("The quarterly report shows that revenue grew in every region while costs stayed flat, "
            "and the board expects the same trend to continue through the rest of the year.")
    rows[3] = {**rows[3], "output": text}
    rows.append({**rows[3], "output": text.replace("board", "management")})  # near duplicate, another chunk
    rows.append(dict(rows[2]))                                                # exact duplicate, another chunk
    rows[5]["output"] = ""
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    one = validate_file(path, tokenizer=tokenizer, max_length=64)
    many = validate_file(path, tokenizer=tokenizer, max_length=64, chunk_rows=4)
    assert one.data["issues"] == many.data["issues"]
    codes = {i["code"] for i in one.data["issues"]}
    assert {"near_duplicate", "exact_duplicate", "empty_output", "truncated_response"} <= codes
    assert one.data["stats"]["tokenization"] == many.data["stats"]["tokenization"]


def test_result_layout_and_failed():
    result = validate_file(CLEAN, model=None, only=["quality", "balance"])
    data = result.data
    assert set(data) >= {"summary", "issues", "stats", "dataset", "examples", "token_views"}
    assert data["dataset"]["validators"] == ["quality", "balance"]
    assert data["dataset"]["max_length"] == 1024
    result.data["summary"]["warnings"] = 1
    assert not failed(result) and failed(result, "warning")
    with pytest.raises(UsageError):
        failed(result, "info")


def test_validator_selection_rejects_unknown_names_and_options():
    spec = load_spec("alpaca")
    assert [v.__name__ for v in resolve_validators(spec, skip=["leakage"])] == [
        "schema", "quality", "consistency", "balance", "tokenization"]
    with pytest.raises(UsageError, match="unknown validator 'qualty'"):
        resolve_validators(spec, only=["qualty"])
    with pytest.raises(UsageError, match="has no option 'threshold'"):
        resolve_validators(spec, options={"quality": {"threshold": "0.5"}})
    bound = resolve_validators(spec, only=["quality"], options={"quality": {"near_dup_threshold": "0.7"}})
    assert bound[0].options == {"near_dup_threshold": 0.7}


def test_a_validator_yielding_garbage_is_a_plugin_error(sftkit_registry, register_plugin):
    from sftkit import hookimpl

    def sloppy(context):
        """Yields a string and a bad severity."""
        yield Issue("sloppy", "odd", "fatal", "bad severity", [0])

    class Plugin:
        @hookimpl
        def register_validators(self, register):
            register(sloppy)

    register_plugin(Plugin(), name="sloppy-plugin")
    with pytest.raises(PluginError, match="validator 'sloppy' from plugin sloppy-plugin yielded"):
        validate_file(CLEAN, model=None, only=["sloppy"])
