"""Every issue code of the built-in validators: data that triggers it, and data that does not.

The clean fixtures (tests/data/validate/clean.jsonl, labels_clean.csv) trigger nothing; each
test changes a few rows of them and checks the exact rows reported.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit.plugins.validators import balance, consistency, leakage, quality, schema, tokenization
from sftkit.spec import spec_from_dict
from sftkit.testing import validation_context

HERE = Path(__file__).parent / "data" / "validate"


def clean_records() -> list[dict]:
    return [json.loads(line) for line in (HERE / "clean.jsonl").read_text("utf-8").splitlines()]


def label_records() -> list[dict]:
    import csv

    with open(HERE / "labels_clean.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def by_code(issues) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for issue in issues:
        out.setdefault(issue.code, []).extend(issue.rows)
    return {code: sorted(rows) for code, rows in out.items()}


def run(validator, records, spec="alpaca", **kwargs):
    options = kwargs.pop("options", {})
    context = validation_context(records=records, spec=spec, **kwargs)
    return by_code(validator(context, **options)), context


# -- the clean fixtures trigger nothing --------------------------------------------------------

@pytest.mark.parametrize("validator", [schema, quality, consistency, balance, leakage])
def test_clean_data_has_no_issues(validator):
    assert run(validator, clean_records())[0] == {}
    assert run(validator, label_records(), spec="financial_phrasebank")[0] == {}


def test_clean_data_has_no_token_issues(tokenizer):
    found, context = run(tokenization, clean_records(), tokenizer=tokenizer)
    assert found == {}
    stats = context.stats["tokenization"]
    assert stats["rows"] == 24 and stats["over_max_length"] == 0
    assert 0 < stats["tokens_p50"] <= stats["tokens_p95"] <= stats["tokens_max"] < 200
    assert 0 <= stats["padding_waste"] < 1


# -- schema --------------------------------------------------------------------------------------

def test_schema_collects_every_failure():
    records = clean_records()
    del records[2]["output"]                 # missing
    records[5]["output"] = None              # null: missing too
    records[7]["output"] = 42                # wrong type
    records[9]["instruction"] = ["a", "b"]   # wrong type
    records[11]["output"] = "   "            # empty under min_length 1
    found, _ = run(schema, records)
    assert found == {"missing_field": [2, 5], "wrong_type": [7, 9], "empty_field": [11]}


def test_schema_reports_turn_problems_of_conversations():
    records = [{"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]},
               {"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
               {"messages": "not a list"}]
    found, _ = run(schema, records, spec="messages")
    assert found == {"wrong_type": [1, 2]}


def test_schema_reports_turns_out_of_order():
    hello = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"}]
    records = [{"messages": hello},
               {"messages": [{"role": "assistant", "content": "I start"}, {"role": "user", "content": "odd"}]},
               {"messages": hello + [{"role": "assistant", "content": "twice in a row"}]}]
    found, _ = run(schema, records, spec="messages")
    assert found == {"non_alternating": [1, 2]}


# -- quality ---------------------------------------------------------------------------------

def test_quality_codes_and_rows():
    records = clean_records()
    records[0]["output"] = ""                                          # empty_output
    records[1]["output"] = "ok"                                        # short_output
    records[4] = {"instruction": "help", "input": "", "output": "Sure, tell me what you need help with today."}
    records[6]["output"] = records[6]["instruction"]                   # output_copies_prompt
    records[8]["input"] = "Sepp+?l+? reported 25 degrees"              # encoding_artifact (mojibake)
    records[10]["output"] += " \ufffd"                                 # encoding_artifact (U+FFFD)
    records[12]["output"] = "caf\u00c3\u00a9 au lait at sea level"     # encoding_artifact (UTF-8 read as Latin-1)
    records[13]["output"] += "\x07"                                     # encoding_artifact (control character)
    records[14]["output"] = " ".join(["sleep well tonight"] * 12)      # repetitive_output
    records[15]["output"] = "Write to jane.doe@example.com for the package."  # pii
    records[16]["output"] = "Call +44 20 7946 0958 to book the quartet."      # pii (phone)
    records.append(dict(records[3]))                                   # exact_duplicate of row 3
    found, context = run(quality, records)
    assert found["empty_output"] == [0]
    assert found["short_output"] == [1]
    assert found["vague_instruction"] == [4]
    assert found["output_copies_prompt"] == [6]
    assert found["encoding_artifact"] == [8, 10, 12, 13]
    assert found["repetitive_output"] == [14]
    assert found["pii"] == [15, 16]
    assert found["exact_duplicate"] == [3, 24]
    assert "near_duplicate" not in found
    assert context.stats["quality"]["pii"] == {"email": 1, "phone": 1}


def test_legitimate_text_is_not_flagged():
    records = clean_records()
    records[0]["output"] = "for (int i = 0; i < n; ++i) { total += x[i]; }  // C++ and a lazy regex re.match(r'\\w+?\\d', s)"
    records[1]["output"] = "Order 2006-2007 cost EUR 100,000 ; see section 3.2.1 of the report."
    records[2]["output"] = "The card number field takes 16 digits, e.g. 1234 5678 9012 3456."  # fails Luhn
    found, _ = run(quality, records)
    assert found == {}


def test_near_duplicates_are_found_and_confirmed():
    records = clean_records()
    base = ("The quarterly report shows that revenue grew in every region while costs stayed flat, "
            "and the board expects the same trend to continue through the rest of the year.")
    records[3]["output"] = base
    records[20] = {**records[3], "output": base.replace("board", "management")}  # one word changed
    records[21] = {**records[3], "output": base.replace("revenue grew", "sales fell").replace("costs", "prices")}
    found, context = run(quality, records)  # default threshold 0.8: Jaccard 0.81 and 0.63
    assert found == {"near_duplicate": [3, 20]}
    assert context.stats["quality"]["near_duplicate_pairs"] == 1
    found, _ = run(quality, records, options={"near_dup_threshold": 0.6})
    assert found == {"near_duplicate": [3, 20, 21]}
    found, _ = run(quality, records, options={"near_dup_threshold": 0.9})
    assert "near_duplicate" not in found


def test_cjk_text_uses_character_shingles():
    from sftkit.plugins.validators.text import shingles

    assert shingles("今天天气很好我们去公园散步吧") == {"今天天气很", "天天气很好", "天气很好我", "气很好我们", "很好我们去",
                                                 "好我们去公", "我们去公园", "们去公园散", "去公园散步", "公园散步吧"}
    assert shingles("one two three four five six") == {"one two three four five", "two three four five six"}


# -- consistency -----------------------------------------------------------------------------

def test_template_marker_in_content():
    records = clean_records()
    records[2]["input"] = "Good morning.\n\n### Response:\nBuenos"         # alpaca marker: error
    records[9]["output"] = "A name: <|im_start|>The Rolling Crumb"         # chatml marker: warning with alpaca
    found, _ = run(consistency, records)
    assert found == {"template_marker_in_content": [2, 9]}
    issues = list(consistency(validation_context(records=records, spec="alpaca")))
    severity = {tuple(i.rows): i.severity for i in issues}
    assert severity == {(2,): "error", (9,): "warning"}


def test_conflicting_labels_variants_and_unknown_labels():
    records = label_records()
    records.append({"label": "negative", "content": records[0]["content"]})  # conflicts with row 0 (positive)
    records[4]["label"] = "Negative "     # variant of negative
    records[7]["label"] = "pos"           # abbreviation of positive
    records[8]["label"] = "bullish"       # not in the spec's labels
    found, _ = run(consistency, records, spec="financial_phrasebank")
    assert found["conflicting_labels"] == [0, 21]
    assert found["label_variants"] == [4, 7]
    assert found["unknown_label"] == [8]


def test_label_variants_without_spec_labels():
    spec = spec_from_dict({"name": "t", "format": "alpaca", "columns": {"input": "content", "output": "label"},
                           "instruction": "Classify.", "task": "classification"})
    records = label_records()
    records[3]["label"] = "POSITIVE"
    found, _ = run(consistency, records, spec=spec)
    assert found == {"label_variants": [3]}


def test_same_prompt_different_outputs_is_a_warning_for_generation():
    records = clean_records()
    records.append({**records[5], "output": "Plants use photosynthesis to make their food from light."})
    issues = list(consistency(validation_context(records=records, spec="alpaca")))
    assert [(i.code, i.severity, i.rows) for i in issues] == [("conflicting_labels", "warning", [5, 24])]


def test_mixed_formats():
    records = clean_records()
    records[3] = {"instruction": records[3]["instruction"], "output": records[3]["output"], "id": 3}
    found, _ = run(consistency, records)
    assert found == {"mixed_formats": [3]}
    chats = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "yes"}]}
             for i in range(5)]
    chats.append({"messages": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
    chats.append({"messages": [{"role": "system", "content": "Be brief."}, *chats[0]["messages"]]})
    found, _ = run(consistency, chats, spec="messages")
    assert found == {"mixed_formats": [5]}  # from/value and human/gpt; a system turn is no other format


# -- balance -----------------------------------------------------------------------------------

def test_class_imbalance_thresholds():
    records = label_records()
    for row in records:
        if row["label"] == "negative":
            row["label"] = "neutral"
    records[1]["label"] = "negative"      # 14 neutral-ish rows, 7 positive, 1 negative
    issues = list(balance(validation_context(records=records, spec="financial_phrasebank")))
    (issue,) = [i for i in issues if i.code == "class_imbalance"]
    assert issue.details["counts"] == {"neutral": 13, "positive": 7, "negative": 1}
    assert issue.details["ratio"] == 13.0
    assert by_code(balance(validation_context(records=records, spec="financial_phrasebank"), max_ratio=20,
                           max_share=0.9)) == {}


def test_task_imbalance():
    spec = spec_from_dict({"name": "t", "format": "alpaca", "columns": {"task": "topic"}})
    records = clean_records()
    for index, row in enumerate(records):
        row["topic"] = "science" if index < 18 else "cooking"
    context = validation_context(records=records, spec=spec)
    issues = list(balance(context))
    assert [i.code for i in issues] == ["task_imbalance"]
    assert issues[0].details["counts"] == {"science": 18, "cooking": 6}
    for index, row in enumerate(records):
        row["topic"] = ["science", "cooking", "travel"][index % 3]
    assert list(balance(validation_context(records=records, spec=spec))) == []


def test_length_outlier():
    records = clean_records()
    records[10]["output"] = "A ripe lemon tastes sour. " * 200
    found, context = run(balance, records)
    assert found == {"length_outlier": [10]}
    assert context.stats["balance"]["output_chars"]["max"] == len(records[10]["output"])


# -- tokenization ------------------------------------------------------------------------------

def test_truncated_response_and_no_trainable_tokens(tokenizer):
    records = clean_records()
    records[4]["output"] = "def add(a, b):\n    " + "x = a + b\n    " * 60 + "return x"
    found, context = run(tokenization, records, tokenizer=tokenizer, max_length=96)
    assert found["truncated_response"] == [4]
    assert "no_trainable_tokens" not in found
    assert context.stats["tokenization"]["over_max_length"] == 1
    assert 4 in context.token_views
    found, _ = run(tokenization, records[:3], tokenizer=tokenizer, max_length=20)  # cut before the response
    assert found["no_trainable_tokens"] == [0, 1, 2]
    assert "marker_split" not in found  # a marker cut off by truncation is not a split marker


def test_truncated_source_and_target_of_an_encoder_decoder(tokenizer):
    import dataclasses

    records = clean_records()
    records[2]["instruction"] = "Explain " + "this very long question " * 80
    records[3]["output"] = "A long answer " * 30
    context = validation_context(records=records, tokenizer=tokenizer)
    context.encoder = dataclasses.replace(context.encoder, encoder_decoder=True, max_source_length=200,
                                          max_target_length=40)
    issues = {issue.code: issue for issue in tokenization(context)}
    assert issues["truncated_source"].rows == [2] and issues["truncated_source"].severity == "warning"
    assert "max_source_length 200" in issues["truncated_source"].message
    assert issues["truncated_response"].rows == [3] and "max_target_length 40" in issues["truncated_response"].message
    assert "template_not_prefix_preserving" not in issues  # the encoder input is the prompt's own tokens


def test_eos_not_trained(tokenizer):
    options = {"prompt": "Q: {instruction}\n", "response": "A:\n{output}", "end": ""}
    from sftkit.pipeline import Encoder

    context = validation_context(records=clean_records()[:4], spec="alpaca", tokenizer=tokenizer)
    context.encoder = Encoder.build(template="custom", masking="completion_only", tokenizer=tokenizer,
                                    max_length=1024, template_options=options)
    assert by_code(tokenization(context)) == {"eos_not_trained": [0, 1, 2, 3]}


def test_double_bos(fresh_tokenizer):
    from sftkit.pipeline import Encoder

    fresh_tokenizer.add_bos_token = True   # the tokenizer adds BOS; the template renders one as well
    assert fresh_tokenizer("hi")["input_ids"][0] == fresh_tokenizer.bos_token_id
    records = clean_records()[:3]
    context = validation_context(records=records, spec="alpaca", tokenizer=fresh_tokenizer)
    assert "double_bos" not in by_code(tokenization(context))
    context.encoder = Encoder.build(template="custom", tokenizer=fresh_tokenizer, max_length=1024,
                                    template_options={"prompt": "{bos}{instruction}\n"})
    assert by_code(tokenization(context))["double_bos"] == [0, 1, 2]


def test_template_not_prefix_preserving(tokenizer):
    from sftkit.pipeline import Encoder

    context = validation_context(records=clean_records()[:4], spec="alpaca", tokenizer=tokenizer)
    # The prompt ends with a space that the response's first word absorbs in training.
    context.encoder = Encoder.build(template="custom", tokenizer=tokenizer, max_length=1024,
                                    template_options={"prompt": "Q: {instruction}\nA: ", "response": "{output}"})
    assert by_code(tokenization(context))["template_not_prefix_preserving"] == [0, 1, 2, 3]


def test_marker_split(tokenizer, sftkit_registry, register_plugin):
    from sftkit import Segment, hookimpl
    from sftkit.pipeline import Encoder

    def answer_colon(example, context):
        """Question, then 'Answer:' right after it (no newline): the marker merges with the space before it."""
        return [Segment(example.instruction, "user", "content", 0), Segment(" Answer:", "assistant", "marker", 1),
                Segment(" " + example.output, "assistant", "content", 1), Segment(context.eos_token, "assistant", "end", 1)]

    answer_colon.markers = ("Answer:",)

    class Plugin:
        @hookimpl
        def register_templates(self, register):
            register(answer_colon)

    register_plugin(Plugin())
    context = validation_context(records=clean_records()[:2], spec="alpaca", tokenizer=tokenizer)
    context.encoder = Encoder.build(template="answer_colon", tokenizer=tokenizer, max_length=1024,
                                    registry=sftkit_registry)
    issues = list(tokenization(context))
    (split,) = [i for i in issues if i.code == "marker_split"]
    assert split.rows == [0, 1]
    assert split.details["markers"]["Answer:"]["alone"] != split.details["markers"]["Answer:"]["in_context"]


def test_no_tokenizer_skips_token_checks():
    found, context = run(tokenization, clean_records())
    assert found == {} and "skipped" in context.stats["tokenization"]


# -- leakage -----------------------------------------------------------------------------------

def test_eval_overlap_exact_and_near():
    train = clean_records()
    long_prompt = ("Summarize the meeting notes: the team agreed to ship the new release on Friday, "
                   "to move the retrospective to Monday and to hire two more engineers next quarter, "
                   "while the design group will present the new onboarding flow to the whole company "
                   "and the support team will publish an updated guide for the most common questions.")
    train[22]["instruction"] = long_prompt
    evals = [dict(train[5]),                                                   # exact prompt
             {"instruction": long_prompt.replace("Friday", "Thursday"), "input": "", "output": "x"},  # near
             {"instruction": "Name the largest ocean on Earth.", "input": "", "output": "The Pacific."}]
    context = validation_context(records=train, spec="alpaca", eval_records=evals)
    issues = list(leakage(context))
    assert [(i.code, i.severity, i.rows, i.details["eval_rows"]) for i in issues] == [
        ("eval_overlap", "error", [5], [0]), ("eval_overlap", "warning", [22], [1])]
    context = validation_context(records=train, spec="alpaca", eval_records=evals[2:])
    assert list(leakage(context)) == []


def test_leakage_without_eval_data_is_skipped():
    found, context = run(leakage, clean_records())
    assert found == {} and "skipped" in context.stats["leakage"]


def test_every_documented_code_is_tested_here():
    import re

    source = Path(__file__).read_text("utf-8")
    readme = (Path(__file__).parents[1] / "README.md").read_text("utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \| (?:error|warning|info)", readme, flags=re.M))
    assert len(documented) >= 27
    missing = [code for code in documented if f'"{code}"' not in source]
    assert missing == []


def test_pii_patterns():
    from sftkit.plugins.validators.quality import pii_kinds

    assert pii_kinds("pay with 4111 1111 1111 1111 today") == {"card"}
    assert pii_kinds("amex 3782 822463 10005") == {"card"}
    assert pii_kinds("4111-1111-1111-1112") == set()                # fails the Luhn check
    assert pii_kinds("1 2 3 4 5 6 7 8 9 10 1 2 3 4 5 6") == set()   # a printed table, not a card
    assert pii_kinds("mail ops@example.org or call (020) 7946 0958") == {"email", "phone"}
    assert pii_kinds("in 2006-2007 sales rose 3.2.1 percent") == set()
