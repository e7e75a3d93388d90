"""The bad-input corpus (tests/data/bad/): every file has a case here.

Rules checked:
- unreadable input raises DataError/UsageError naming the file and the line or row; through
  the CLI it exits 2 with one message and no traceback;
- with --skip-invalid, broken lines are left out and listed, and the good records load exactly;
- files that are odd but readable (BOM, CRLF, quotes, embedded newlines, extra columns) load
  to exactly the values written;
- data-quality problems (wrong types, missing fields, bad roles) are not load errors: they are
  noted per row in ``Example.meta["problems"]`` for the validators (exit 1 from validate).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sftkit.errors import DataError, SftkitError, UsageError
from conftest import open_examples, read_records
from sftkit.pipeline import Encoder

BAD = Path(__file__).resolve().parent / "data" / "bad"


def squash(text: str) -> str:
    """Output without whitespace (Rich wraps long messages at the terminal width)."""
    return re.sub(r"\s+", "", text)


# -- unreadable input: (file, options, error type, line, row, fragment of the message) ---------------
UNREADABLE = [
    ("empty.jsonl", {}, DataError, None, None, "the dataset has no records"),
    ("empty.json", {}, DataError, None, None, "the file is empty"),
    ("empty.csv", {}, DataError, None, None, "the file is empty"),
    ("blank_lines_only.jsonl", {}, DataError, None, None, "the dataset has no records"),
    ("truncated.json", {}, DataError, 2, None, "invalid JSON"),
    ("truncated_last_line.jsonl", {}, DataError, 3, None, "invalid JSON"),
    ("broken_middle.jsonl", {}, DataError, 3, None, "invalid JSON at column 37"),
    ("invalid_utf8.jsonl", {}, DataError, 3, None, "invalid UTF-8"),
    ("invalid_utf8.csv", {}, DataError, 3, None, "invalid UTF-8"),
    ("not_object_line.jsonl", {}, DataError, 2, None, "expected a JSON object, got list"),
    ("array_of_scalars.json", {}, DataError, None, 1, "expected an object, got int"),
    ("scalar.json", {}, DataError, None, None, "expected a JSON array of objects, got int"),
    ("two_arrays.json", {}, DataError, None, None, "the top-level object holds 2 arrays (train, test)"),
    ("deeply_nested.jsonl", {}, DataError, 2, None, "JSON nested too deeply"),
    ("deeply_nested.json", {}, DataError, None, None, "JSON nested too deeply"),
    ("unterminated_quote.csv", {}, DataError, 4, None, "the record starts on line 3"),
    ("too_many_fields.csv", {}, DataError, 3, None, "3 fields but the header has 2"),
    ("duplicate_header.csv", {}, DataError, 1, None, "duplicate column name(s) ['output']"),
    ("not_parquet.parquet", {}, DataError, None, None, "not a readable Parquet file"),
    ("lone_surrogate.jsonl", {}, DataError, 2, None, "lone surrogate escape \\ud800"),
    ("lone_surrogate.json", {"spec": "alpaca"}, DataError, None, 1, "lone surrogate escape \\udfff"),
    ("wrong_schema.parquet", {}, UsageError, None, None, "cannot detect the dataset format from the columns (id, values)"),
    ("unknown_columns.jsonl", {}, UsageError, None, None, "cannot detect the dataset format from the columns (question, answer)"),
]


# The field, where one is to blame.
FIELDS = {"lone_surrogate.jsonl": "instruction", "lone_surrogate.json": "output.text"}


@pytest.mark.parametrize("name, options, error, line, row, fragment", UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_unreadable_input_names_file_and_line(name, options, error, line, row, fragment):
    path = BAD / name
    with pytest.raises(error) as caught:
        _, _, examples = open_examples(path, **options)
        list(examples)
    exc = caught.value
    assert fragment in exc.message
    if error is DataError:
        assert exc.path == str(path)
        assert str(path) in exc.message
        assert exc.line == line
        assert exc.row == row
        assert exc.field == FIELDS.get(name)


# Through the CLI: validate (the pre-flight check) exits 2 with one message, no traceback,
# and writes no report at all: nothing half-written that could pass for a complete check.
@pytest.mark.parametrize("name, options, error, line, row, fragment", UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_unreadable_input_exits_2_with_one_message(run_cli, tmp_path, name, options, error, line, row, fragment):
    path = BAD / name
    reports = tmp_path / "reports"
    spec = ["--spec", options["spec"]] if "spec" in options else []
    result = run_cli("validate", path, *spec, "--no-tokenizer", "--report-dir", reports, "--json", tmp_path / "v.json")
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert "Traceback" not in output
    assert output.count("error:") == 1
    flat = squash(result.stderr)
    assert squash(fragment) in flat
    if error is DataError:
        assert squash(str(path)) in flat
        if line is not None:
            assert re.search(rf"line{line}[:,]", flat)
        if row is not None:
            assert f"row{row}" in flat
        if name in FIELDS:
            assert squash(f"field '{FIELDS[name]}':") in flat
    assert result.stdout == ""
    assert not (tmp_path / "v.json").exists()
    assert not reports.exists() or list(reports.iterdir()) == []


def test_preview_and_train_refuse_a_broken_line_the_same_way(run_cli, tmp_path):
    path = BAD / "broken_middle.jsonl"
    preview = run_cli("preview", path, "--model", "tiny-random", "--format", "json", "-n", "10")
    train = run_cli("train", "--data", path, "--model", "tiny-random", "--max-steps", "1",
                    "--output-dir", tmp_path / "run")
    for result in (preview, train):
        assert result.exit_code == 2
        assert "Traceback" not in result.stdout + result.stderr
        assert squash(f"{path}, line 3: invalid JSON") in squash(result.stderr)
    assert preview.stdout == ""
    run = tmp_path / "run"
    assert not run.exists() or list(run.iterdir()) == []  # no run files that look like a run


# -- --skip-invalid: (file, lines or rows skipped, instructions of the records kept) ---------------------
SKIPPABLE = [
    ("broken_middle.jsonl", [3], None, ["q0", "q1", "q3", "q4"]),
    ("truncated_last_line.jsonl", [3], None, ["a", "c"]),
    ("invalid_utf8.jsonl", [3], None, ["a", "c", "g"]),
    ("not_object_line.jsonl", [2], None, ["a", "c"]),
    ("deeply_nested.jsonl", [2], None, ["a", "c"]),
    ("array_of_scalars.json", None, [1, 2], ["a", "c"]),
    ("lone_surrogate.jsonl", [2], None, ["a pair 😀 is fine", "after"]),
    ("invalid_utf8.csv", [3], None, ["fine", "last"]),
    ("too_many_fields.csv", [3], None, ["fine", "last"]),
    # The unterminated quote swallows the rest of the file: only the record before it survives.
    ("unterminated_quote.csv", [4], None, ["fine"]),
]


@pytest.mark.parametrize("name, lines, rows, kept", SKIPPABLE, ids=[c[0] for c in SKIPPABLE])
def test_skip_invalid_lists_broken_lines_and_keeps_the_rest(name, lines, rows, kept):
    skipped: list[DataError] = []
    _, _, examples = open_examples(BAD / name, skip_invalid=True, skipped=skipped)
    examples = list(examples)
    assert [e.instruction for e in examples] == kept
    assert [e.row for e in examples] == list(range(len(kept)))
    assert all(isinstance(s, DataError) and s.path == str(BAD / name) for s in skipped)
    if lines is not None:
        assert [s.line for s in skipped] == lines
    if rows is not None:
        assert [s.row for s in skipped] == rows


def test_skip_invalid_still_refuses_a_file_that_is_broken_as_a_whole():
    for name in ("truncated.json", "empty.csv", "duplicate_header.csv", "not_parquet.parquet"):
        with pytest.raises(DataError):
            list(open_examples(BAD / name, skip_invalid=True, skipped=[])[2])


def test_loader_without_skip_mode_never_leaks_an_error_object_as_a_record(tmp_path):
    # A loader that yields a DataError while not asked to skip: the pipeline raises it.
    path = tmp_path / "x.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"\n', encoding="utf-8")
    records = read_records(path)
    assert next(records) == {"instruction": "a", "output": "b"}
    with pytest.raises(DataError) as caught:
        next(records)
    assert caught.value.line == 2


def test_validate_skip_invalid_lists_the_skipped_lines_in_output_and_report(run_cli, tmp_path):
    path = BAD / "invalid_utf8.csv"
    result = run_cli("validate", path, "--no-tokenizer", "--skip-invalid", "--report-dir", tmp_path,
                     "--only", "schema")
    assert result.exit_code == 0, result.stderr
    assert squash(f"skipped: {path}, line 3: invalid UTF-8") in squash(result.stderr)
    report = json.loads((tmp_path / "validate.json").read_text())
    assert report["summary"]["rows"] == 2
    assert [(s["line"], s["row"]) for s in report["dataset"]["skipped_lines"]] == [(3, None)]
    html = (tmp_path / "validate.html").read_text()
    assert "1 broken lines skipped" in html and "Skipped lines (1, not checked)" in html
    assert "line 3: invalid UTF-8" in html


def test_train_and_eval_skip_invalid_list_the_skipped_lines(run_cli, tmp_path):
    path = BAD / "broken_middle.jsonl"
    expected = [{"line": 3, "row": None, "message": f"{path}, line 3: invalid JSON at column 37: Expecting ',' delimiter"}]
    train = run_cli("train", "--data", path, "--skip-invalid", "--model", "tiny-random", "--max-steps", "1",
                    "--batch-size", "2", "--no-validate", "--output-dir", tmp_path / "run")
    assert train.exit_code == 0, train.stderr
    assert squash(f"skipped: {path}, line 3: invalid JSON") in squash(train.stdout + train.stderr)
    data = json.loads((tmp_path / "run" / "train.json").read_text())["data"][0]
    assert (data["used"], data["skipped_lines"], data["skipped"]) == (4, 1, expected)
    evaluate = run_cli("eval", "--model", "tiny-random", "--data", path, "--skip-invalid", "--max-new-tokens", "2",
                       "--resamples", "100", "--report-dir", tmp_path / "eval")
    assert evaluate.exit_code == 0, evaluate.stderr
    assert squash(f"skipped: {path}, line 3: invalid JSON") in squash(evaluate.stderr)
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert (result["rows"], result["skipped_lines"]) == (4, expected)
    assert "1 broken lines skipped" in (tmp_path / "eval" / "eval.html").read_text()


def test_cli_skip_invalid_lists_the_skipped_line(run_cli):
    path = BAD / "broken_middle.jsonl"
    result = run_cli("preview", path, "--model", "tiny-random", "--format", "json", "-n", "10", "--skip-invalid")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert [e["row"] for e in out["examples"]] == [0, 1, 2, 3]
    assert [(s["line"], s["row"]) for s in out["skipped"]] == [(3, None)]
    assert "invalid JSON" in out["skipped"][0]["message"]
    flat = squash(result.stderr)
    assert squash(f"skipped: {path}, line 3: invalid JSON") in flat
    assert "Traceback" not in result.stdout + result.stderr


# -- readable oddities load to exactly the values written --------------------------------------------
def _records(name: str, **options) -> list[dict]:
    return list(read_records(BAD / name, **options))


def test_bom_is_not_part_of_the_first_key():
    for name in ("bom.jsonl", "bom.csv"):
        assert _records(name) == [{"instruction": "first", "output": "one"}, {"instruction": "second", "output": "two"}]


def test_lone_surrogates_become_replacement_characters_on_request():
    records = _records("lone_surrogate.jsonl", loader_options={"encoding_errors": "replace"})
    assert [r["instruction"] for r in records] == ["a pair 😀 is fine", "half a pair \ufffd here", "after"]
    records = _records("lone_surrogate.json", loader_options={"encoding_errors": "replace"})
    assert records[1]["output"] == {"text": "half \ufffd"}


def test_json_object_with_several_arrays_reads_the_chosen_one():
    assert _records("two_arrays.json", loader_options={"key": "test"}) == [{"instruction": "c", "output": "d"}]


def test_crlf_line_ends():
    assert _records("crlf.jsonl") == [{"instruction": "first", "output": "one"}, {"instruction": "second", "output": "two"}]
    # CSV: the line ends are not part of any value; a line end inside quotes is data, kept as written.
    assert _records("crlf.csv") == [{"instruction": "first", "output": "one"}, {"instruction": "multi\r\nline", "output": "two"}]


def test_csv_embedded_quotes_newlines_commas_and_tabs():
    assert _records("quotes_newlines.csv") == [
        {"instruction": 'He said "hi"', "output": "line one\nline two"},
        {"instruction": "comma, inside", "output": "tab\there"},
        {"instruction": "", "output": "empty instruction"},
    ]


def test_csv_nan_and_empty_cells_stay_text_and_short_rows_are_missing():
    # CSV has no types: "NaN" is the text NaN and an empty cell is "", never a float NaN;
    # a row with too few fields leaves the rest None, which the spec reports as missing.
    assert _records("nan_empty.csv") == [
        {"instruction": "first", "input": "", "output": "one"},
        {"instruction": "second", "input": "NaN", "output": ""},
        {"instruction": "third", "input": "x", "output": "NaN"},
        {"instruction": "", "input": "", "output": ""},
        {"instruction": "fifth", "input": "y", "output": None},
    ]
    _, _, examples = open_examples(BAD / "nan_empty.csv")
    problems = {e.row: e.meta.get("problems") for e in examples}
    assert problems == {0: None, 1: None, 2: None, 3: None,
                        4: [("missing_field", "output", "no value for 'output' (column 'output')")]}


def test_extra_columns_are_ignored_and_kept_out_of_the_example():
    _, _, examples = open_examples(BAD / "extra_columns.jsonl")
    examples = list(examples)
    assert [(e.instruction, e.input, e.output, e.meta) for e in examples] == [("a", "", "b", {}), ("c", "", "d", {})]


def test_ten_megabyte_field_loads_and_renders(tmp_path, tokenizer):
    big = "x" * 10_000_000
    jsonl = tmp_path / "big.jsonl"
    jsonl.write_text(json.dumps({"instruction": "repeat", "output": big}) + "\n"
                     + json.dumps({"instruction": "small", "output": "ok"}) + "\n", encoding="utf-8")
    csv_path = tmp_path / "big.csv"
    csv_path.write_text(f'instruction,output\nrepeat,"{big}"\nsmall,ok\n', encoding="utf-8")
    for path in (jsonl, csv_path):
        _, _, examples = open_examples(path)
        examples = list(examples)
        assert [len(e.output) for e in examples] == [10_000_000, 2]
        assert examples[0].output == big
    encoder = Encoder.build(template="alpaca", tokenizer=tokenizer, max_length=64)
    segments = encoder.segments(examples[0])
    assert sum(len(s.text) for s in segments if s.part == "content" and s.role == "assistant") == 10_000_000


def test_ten_megabyte_field_through_the_cli(tmp_path, run_cli):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"instruction": "repeat", "output": "word " * 2_000_000}) + "\n", encoding="utf-8")
    result = run_cli("preview", path, "--model", "tiny-random", "--format", "json", "-n", "1", "--max-length", "32")
    assert result.exit_code == 0, result.stderr
    example = json.loads(result.stdout)["examples"][0]
    assert example["truncated"] is True
    assert len(example["tokens"]) == 32


# -- data-quality problems: noted per row, never a load error ----------------------------------------
def _problems(name: str, **options) -> dict[int, list]:
    _, _, examples = open_examples(BAD / name, **options)
    return {e.row: e.meta.get("problems") for e in examples}


def test_wrong_types_are_row_problems_and_values_are_kept_as_text():
    _, _, examples = open_examples(BAD / "wrong_types.jsonl")
    examples = list(examples)
    assert {e.row: e.meta.get("problems") for e in examples} == {
        0: [("wrong_type", "output", "'output' is a int, expected text")],
        1: [("missing_field", "output", "no value for 'output' (column 'output')")],
        2: [("wrong_type", "output", "'output' is a list, expected text")],
        3: [("wrong_type", "output", "'output' is a dict, expected text")],
        4: [("wrong_type", "instruction", "'instruction' is a int, expected text")],
        5: None,
    }
    assert [e.output for e in examples] == ["42", "", '["a", "b"]', '{"text": "x"}', "number instruction", "fine"]


def test_missing_columns_are_row_problems():
    missing = ("missing_field", "output", "no value for 'output' (column 'output')")
    assert _problems("missing_columns.jsonl") == {0: None, 1: [missing], 2: None, 3: [missing]}


def test_parquet_with_wrong_types_and_wrong_schema():
    problems = _problems("wrong_types.parquet")
    assert [sorted(code for code, _, _ in p) for p in problems.values()] == [
        ["wrong_type", "wrong_type"], ["wrong_type", "wrong_type"], ["missing_field", "wrong_type"]]
    assert "'output' is NaN" in [m for _, _, m in problems[1]]
    # With a spec the file can be read, but every row lacks the fields the spec needs.
    assert _problems("wrong_schema.parquet", spec="alpaca") == {
        row: [("missing_field", "instruction", "no value for 'instruction' (column 'instruction')"),
              ("missing_field", "output", "no value for 'output' (column 'output')")] for row in range(3)}


def test_unknown_roles_are_row_problems():
    assert _problems("unknown_roles.jsonl") == {
        0: None,
        1: [("unknown_role", "messages", "turn 0 has unknown role 'wizard'")],
        2: [("unknown_role", "messages", "turn 0 has unknown role None")],
    }
    assert _problems("sharegpt_bad.json") == {
        0: None,
        1: [("unknown_role", "messages", "turn 0 has unknown role 'narrator'")],
        2: [("missing_field", "messages", "turn 0 has no content"), ("wrong_type", "messages", "turn 1 content is a dict")],
    }


def test_empty_content_and_malformed_conversations_are_row_problems():
    assert _problems("empty_content.jsonl") == {
        0: None,
        1: None,
        2: [("missing_field", "messages", "turn 0 has no content"), ("missing_field", "messages", "turn 1 has no content")],
        3: [("missing_field", "messages", "the conversation has no turns")],
        4: [("wrong_type", "messages", "messages is a str, expected a list")],
        5: [("wrong_type", "messages", "turn 0 is a list, expected an object"),
            ("wrong_type", "messages", "turn 1 content is a int"),
            ("non_alternating", "messages",
             "turn 0 is assistant, expected user (system first, then user and assistant in turn)")],
    }


def test_non_alternating_turns_are_row_problems():
    assert _problems("non_alternating.jsonl") == {
        0: [("non_alternating", "messages",
             "turn 1 is user, expected assistant (system first, then user and assistant in turn)")],
        1: [("non_alternating", "messages",
             "turn 0 is assistant, expected user (system first, then user and assistant in turn)")],
        2: None,  # a question without an answer: validate reports it as empty_output
    }


# (file, extra validate options, {(code, (rows...))} that must be among the issues)
QUALITY = [
    ("wrong_types.jsonl", [], {("missing_field", (1,)), ("wrong_type", (4,)), ("wrong_type", (0, 2, 3)),
                               ("empty_output", (1,))}),
    ("missing_columns.jsonl", [], {("missing_field", (1, 3))}),
    ("unknown_roles.jsonl", [], {("wrong_type", (1, 2))}),
    ("non_alternating.jsonl", [], {("non_alternating", (0, 1)), ("empty_output", (2,))}),
    ("empty_content.jsonl", [], {("missing_field", (2, 3)), ("wrong_type", (4, 5)), ("empty_output", (1, 2, 3, 4))}),
    ("sharegpt_bad.json", [], {("missing_field", (2,)), ("wrong_type", (1, 2))}),
    ("nan_empty.csv", [], {("missing_field", (4,)), ("empty_output", (1, 3, 4))}),
    ("wrong_types.parquet", [], {("missing_field", (2,)), ("missing_field", (1,)), ("wrong_type", (0, 1)),
                                 ("wrong_type", (0, 2))}),
    ("wrong_schema.parquet", ["--spec", "alpaca"], {("missing_field", (0, 1, 2))}),
]


@pytest.mark.parametrize("name, options, expected", QUALITY, ids=[c[0] for c in QUALITY])
def test_data_quality_problems_are_validation_issues_with_rows(run_cli, tmp_path, name, options, expected):
    result = run_cli("validate", BAD / name, *options, "--no-tokenizer", "--report-dir", tmp_path)
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    issues = json.loads((tmp_path / "validate.json").read_text())["issues"]
    found = {(i["code"], tuple(i["rows"])) for i in issues if i["severity"] == "error"}
    assert expected <= found


TEMPLATES_WITHOUT_TOKENIZER_NEEDS = ("alpaca", "simple", "human_assistant", "chatml", "plain", "custom")


@pytest.mark.parametrize("template", TEMPLATES_WITHOUT_TOKENIZER_NEEDS + ("chat_template",))
def test_odd_conversations_render_and_tokenize_without_error(template, tokenizer):
    """Non-alternating turns, empty content, an assistant-only or user-only conversation."""
    encoder = Encoder.build(template=template, masking="completion_only", tokenizer=tokenizer)
    for name in ("non_alternating.jsonl", "empty_content.jsonl", "unknown_roles.jsonl"):
        _, _, examples = open_examples(BAD / name)
        examples = list(examples)
        for example, tokens in zip(examples, encoder.encode_many(examples)):
            assert len(tokens.labels) == len(tokens.input_ids) == len(tokens.weights)
            assert set(tokens.labels) - {-100} <= set(tokens.input_ids)
            if not example.response_text():
                # Nothing to learn (no assistant turn, or an empty one): only an end token can train,
                # which validate reports; the encoder itself must not fail.
                assert tokens.num_trained <= 2
    _, _, examples = open_examples(BAD / "non_alternating.jsonl")
    user_only = list(examples)[2]
    segments = encoder.segments(user_only)
    assert not any(s.role == "assistant" and s.part == "content" and s.text for s in segments)
    # No response text trains (the single-turn custom template still closes an empty response with EOS).
    trained = [s for s, w in zip(segments, encoder.weights(segments)) if w > 0]
    assert all(s.part == "end" or not s.text for s in trained)


# -- spec YAML ---------------------------------------------------------------------------------
SPECS = [
    ("spec_unknown_key.yaml", None, "unknown spec key 'columsn'", "did you mean 'columns'?"),
    ("spec_wrong_types.yaml", None, "field 'columns': columns must map canonical fields", None),
    ("spec_bad_format.yaml", None, "field 'format': unknown format 'alpacca'", None),
    ("spec_not_mapping.yaml", None, "a spec must be a mapping", None),
    ("spec_invalid_yaml.yaml", 3, "invalid YAML", None),
    ("spec_billion_laughs.yaml", 2, "YAML aliases (*name) are not allowed", None),
    ("spec_python_tag.yaml", 1, "could not determine a constructor", None),
    ("spec_invalid_utf8.yaml", 1, "invalid UTF-8", None),
]


@pytest.mark.parametrize("name, line, fragment, hint", SPECS, ids=[c[0] for c in SPECS])
def test_bad_spec_yaml_is_refused_with_file_and_line(run_cli, name, line, fragment, hint):
    from sftkit.spec import load_spec

    path = BAD / name
    with pytest.raises(SftkitError) as caught:
        load_spec(str(path))
    assert str(path) in caught.value.message and fragment in caught.value.message
    assert getattr(caught.value, "line", None) == line
    if hint:
        assert caught.value.hint == hint
    result = run_cli("preview", BAD / "bom.jsonl", "--spec", path, "--model", "tiny-random", "--format", "json")
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert squash(fragment) in squash(result.stderr)
    assert result.stdout == ""


def test_alias_bomb_is_refused_before_expansion():
    """The alias bomb would expand to 9**9 strings; it is refused at the first alias."""
    import time

    from sftkit.spec import safe_yaml

    text = (BAD / "spec_billion_laughs.yaml").read_text()
    start = time.perf_counter()
    with pytest.raises(DataError, match="aliases"):
        safe_yaml(text, "bomb.yaml")
    assert time.perf_counter() - start < 5  # generous: a refusal, not an expansion
    # A plain anchor without aliases is harmless and still parses.
    assert safe_yaml("a: &x 1\nb: 2\n", "ok.yaml") == {"a": 1, "b": 2}


# -- recipe YAML -------------------------------------------------------------------------------
RECIPES = [
    ("recipe_unknown_key.yaml", "lora_rr"),
    ("recipe_wrong_types.yaml", "max_steps"),
    ("recipe_billion_laughs.yaml", "YAML aliases (*name) are not allowed"),
]


@pytest.mark.parametrize("name, fragment", RECIPES, ids=[c[0] for c in RECIPES])
def test_bad_recipe_yaml_is_refused_by_train(run_cli, tmp_path, name, fragment):
    path = BAD / name
    result = run_cli("train", path, "--data", BAD / "bom.jsonl", "--output-dir", tmp_path / "run")
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert "Traceback" not in output and output.count("error:") == 1
    assert squash(fragment) in squash(result.stderr) and squash(str(path)) in squash(result.stderr)
    assert not (tmp_path / "run").exists()


def test_every_corpus_file_has_a_case():
    covered = {c[0] for c in UNREADABLE} | {c[0] for c in SKIPPABLE} | {c[0] for c in SPECS} | {c[0] for c in RECIPES}
    covered |= {"bom.jsonl", "bom.csv", "crlf.jsonl", "crlf.csv", "quotes_newlines.csv", "nan_empty.csv",
                "extra_columns.jsonl", "wrong_types.jsonl", "missing_columns.jsonl", "wrong_types.parquet",
                "unknown_roles.jsonl", "sharegpt_bad.json", "empty_content.jsonl", "non_alternating.jsonl",
                "rich_markup.jsonl", "lone_surrogate.json"}
    files = {p.name for p in BAD.iterdir() if p.is_file()}
    assert len(files) >= 25
    assert files - covered == set()
    assert covered - files == set()


def test_many_skipped_lines_are_listed_up_to_a_limit_then_counted(run_cli, tmp_path):
    path = tmp_path / "many_broken.jsonl"
    good = json.dumps({"instruction": "Say hi.", "output": "hi"})
    path.write_text("\n".join([good] + ["{broken"] * 30 + [good]) + "\n")
    result = run_cli("validate", path, "--no-tokenizer", "--skip-invalid", "--report-dir", tmp_path, "--only", "schema")
    assert result.exit_code == 0, result.stderr
    flat = squash(result.stderr)
    assert flat.count("skipped:") == 21  # 20 listed, then one line with the count
    assert squash("... and 10 more broken lines (30 in all") in flat
    report = json.loads((tmp_path / "validate.json").read_text())
    assert len(report["dataset"]["skipped_lines"]) == 30
