"""`sftkit validate` on the real data sets: the problems they are known to have, with row
indices computed independently here (pandas, json, the tokenizer on hand-built text)."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import shared_file, validate_file


def issues_by_code(result) -> dict[str, dict]:
    out = {}
    for issue in result.data["issues"]:
        assert issue["code"] not in out, f"{issue['code']} reported twice"
        out[issue["code"]] = issue
    return out


@pytest.fixture(scope="module")
def phrasebank():
    path = shared_file("financial_phrasebank.csv")
    frame = pd.read_csv(path, encoding_errors="replace", dtype=str, keep_default_na=False)
    result = validate_file(path, spec="financial_phrasebank", model=None)
    return frame, result


def test_phrasebank_row_count(phrasebank):
    frame, result = phrasebank
    assert result.data["summary"]["rows"] == len(frame) == 4846


def test_phrasebank_exact_duplicates(phrasebank):
    frame, result = phrasebank
    key = frame["content"].str.lower().str.split().str.join(" ")
    expected = sorted(frame.index[pd.DataFrame({"k": key, "l": frame["label"]}).duplicated(keep=False)])
    assert expected  # the file is known to repeat sentences
    assert issues_by_code(result)["exact_duplicate"]["rows"] == expected


def test_phrasebank_conflicting_labels(phrasebank):
    frame, result = phrasebank
    key = frame["content"].str.lower().str.split().str.join(" ")
    labels_per_sentence = frame.groupby(key)["label"].nunique()
    conflicting = labels_per_sentence[labels_per_sentence > 1].index
    assert len(conflicting) == 2
    expected = sorted(frame.index[key.isin(conflicting)])
    issue = issues_by_code(result)["conflicting_labels"]
    assert issue["severity"] == "error"
    assert issue["rows"] == expected
    assert len(issue["details"]["groups"]) == 2


def test_phrasebank_class_imbalance(phrasebank):
    frame, result = phrasebank
    counts = frame["label"].value_counts()
    issue = issues_by_code(result)["class_imbalance"]
    assert issue["details"]["counts"] == counts.to_dict()
    assert issue["details"]["ratio"] == pytest.approx(counts.max() / counts.min(), rel=1e-3)
    assert issue["details"]["largest_share"] == pytest.approx(counts.max() / len(frame), rel=1e-3)


def test_phrasebank_mojibake(phrasebank):
    frame, result = phrasebank
    pattern = re.compile(r"\+[?_]|[A-Za-z]\+\+[a-z]|\ufffd")
    expected = sorted(i for i, text in frame["content"].items() if pattern.search(text))
    replacement = [i for i, text in frame["content"].items() if "\ufffd" in text]
    assert len(replacement) == 2  # the two lines with invalid bytes, read with encoding_errors=replace
    rows = issues_by_code(result)["encoding_artifact"]["rows"]
    assert rows == expected
    assert set(replacement) <= set(rows)


def test_code_alpaca_empty_outputs():
    path = shared_file("code_alpaca_2k.json")
    records = json.loads(path.read_text("utf-8"))
    expected = [i for i, r in enumerate(records) if not r["output"].strip()]
    assert len(expected) == 2
    result = validate_file(path, model=None)
    assert issues_by_code(result)["empty_output"]["rows"] == expected
    assert result.data["summary"]["rows"] == len(records)


def test_dialogsum_truncated_responses(tokenizer, run_cli, tmp_path):
    path = shared_file("dialogsum.dev.jsonl")
    records = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    preamble = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n")
    texts = [f"{preamble}### Instruction:\nSummarize the following dialogue.\n\n### Input:\n{r['dialogue']}"
             f"\n\n### Response:\n{r['summary']}{tokenizer.eos_token}" for r in records]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    expected = [i for i, n in enumerate(lengths) if n > 256]  # the response (and EOS) come last
    assert 0 < len(expected) < len(records)
    out = tmp_path / "dialogsum.json"
    result = run_cli("validate", path, "--spec", "dialogsum", "--max-length", "256", "--report-dir", tmp_path,
                     "--json", out, "--only", "tokenization")
    assert result.exit_code == 1, result.stderr
    data = json.loads(out.read_text("utf-8"))
    (issue,) = [i for i in data["issues"] if i["code"] == "truncated_response"]
    assert issue["rows"] == expected
    assert data["stats"]["tokenization"]["over_max_length"] == len(expected)
    assert "truncated_response" in result.stdout
