"""Loaders on small fixtures and on the real files of ../shared/data."""
from __future__ import annotations

import csv
import io
import json

import pytest

from conftest import FIXTURES as DATA, shared_file
from sftkit.errors import DataError, UsageError
from conftest import open_examples, read_records
from sftkit.pipeline import choose_loader

FIXTURES = DATA / "fixtures"


def records(path, **kw):
    return list(read_records(path, **kw))


def test_loader_is_chosen_from_the_suffix(tmp_path):
    names = {}
    for suffix in (".json", ".jsonl", ".csv", ".tsv", ".parquet"):
        path = tmp_path / f"x{suffix}"
        path.write_text("")
        names[suffix] = choose_loader(path).__name__
    assert names == {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
    with pytest.raises(UsageError, match="no loader"):
        choose_loader(tmp_path / "x.weird")


def test_json_jsonl_csv_tsv_fixtures():
    alpaca = records(FIXTURES / "alpaca_small.json")
    assert [r["output"] for r in alpaca] == ["Paris is the capital of France.", "2 + 3 = 5", "Guten Morgen"]
    chat = records(FIXTURES / "chat_small.jsonl")
    assert len(chat) == 2 and chat[0]["messages"][-1] == {"role": "assistant", "content": "4"}
    rows = records(FIXTURES / "sentiment_small.csv")
    assert rows[1] == {"label": "negative", "content": 'Sales fell sharply, and "margins" shrank .'}
    tsv = records(FIXTURES / "pc_small.tsv")
    assert tsv == [{"prompt": "The sky is", "completion": "blue."}, {"prompt": "Two plus two is", "completion": "four."}]


def test_jsonl_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n{"instruction": "d"}\n')
    with pytest.raises(DataError) as info:
        records(path)
    assert info.value.line == 2 and str(path) in str(info.value) and "line 2" in str(info.value)


def test_json_array_error_names_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"a": 1},\n  {"a": 2,,}\n]\n')
    with pytest.raises(DataError) as info:
        records(path)
    assert info.value.line == 3


def test_parquet_and_datasets_folder_roundtrip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    data = records(FIXTURES / "alpaca_small.json")
    pq.write_table(pa.Table.from_pylist(data), tmp_path / "a.parquet")
    assert records(tmp_path / "a.parquet") == data
    Dataset.from_list(data).save_to_disk(str(tmp_path / "saved"))
    assert choose_loader(tmp_path / "saved").__name__ == "hf_disk"
    assert records(tmp_path / "saved") == data


def test_real_code_alpaca(shared_data):
    rows = records(shared_file("code_alpaca_2k.json"))
    raw = json.loads(shared_file("code_alpaca_2k.json").read_text("utf-8"))
    assert len(rows) == len(raw) == 2017
    assert rows[0] == raw[0]
    assert sum(1 for r in rows if not r["output"].strip()) == 2


def test_real_dialogsum_and_self_instruct(shared_data):
    rows = records(shared_file("dialogsum.dev.jsonl"))
    assert len(rows) == 500 and set(rows[0]) == {"fname", "dialogue", "summary", "topic"}
    spec, _, examples = open_examples(shared_file("self_instruct_seed_tasks.jsonl"), spec="self_instruct")
    examples = list(examples)
    assert len(examples) == 175
    first = json.loads(shared_file("self_instruct_seed_tasks.jsonl").read_text("utf-8").splitlines()[0])
    assert examples[0].output == first["instances"][0]["output"]
    assert examples[0].meta["category"] == first["name"]


def test_real_financial_phrasebank_invalid_utf8_is_reported_then_readable(shared_data):
    path = shared_file("financial_phrasebank.csv")
    raw = path.read_bytes()
    bad_line = next(i for i, line in enumerate(raw.split(b"\n"), start=1) if _invalid(line))
    with pytest.raises(DataError) as info:
        records(path)
    assert info.value.line == bad_line and "encoding_errors=replace" in str(info.value)
    # The spec for this file reads bad bytes as U+FFFD, so nothing is lost and validate can report them.
    spec, _, examples = open_examples(path, spec="financial_phrasebank")
    examples = list(examples)
    expected = list(csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"))))
    assert len(examples) == len(expected) == 4846
    assert [e.output for e in examples] == [r["label"] for r in expected]
    assert [e.input for e in examples] == [r["content"] for r in expected]
    assert sum("\ufffd" in e.input for e in examples) == 2


def _invalid(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_unreadable_file_exits_2_without_traceback(tmp_path, run_cli):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "x", "output": "y"}\nnot json\n')
    result = run_cli("preview", path, "--model", "tiny-random")
    assert result.exit_code == 2
    assert "line 2" in result.stderr and str(path) in result.stderr.replace("\n", "")
    assert "Traceback" not in result.stderr + result.stdout
    missing = run_cli("preview", tmp_path / "nope.json")
    assert missing.exit_code == 2 and "no such file" in missing.stderr
