"""Golden token/label snapshots for every template x masking strategy on real rows.

The snapshots (tests/data/golden/) hold, per template and source row, the token ids and, per
masking strategy, which tokens train (and their weights). A boundary that moves by a single
token fails the test. Regenerate deliberately with SFTKIT_UPDATE_GOLDEN=1 and review the diff.
Independent checks (not from the snapshots) sit beside them: the trained tokens of
completion_only decode to exactly the response plus the end token, and `full` trains all.
"""
from __future__ import annotations

import json
import os

import pytest

from conftest import FIXTURES, open_examples, shared_file
from sftkit.pipeline import Encoder
from sftkit.registry import get_registry

GOLDEN = FIXTURES / "golden"
TEMPLATES = ["alpaca", "simple", "human_assistant", "chatml", "chat_template", "plain", "custom"]
MASKINGS = ["completion_only", "full", "assistant_only", "last_turn", "prompt_weighted"]
# (source file, spec, rows): real rows, single-turn with and without input, and a classification row.
SOURCES = [
    ("code_alpaca_2k.json", "alpaca", [0, 3]),
    ("financial_phrasebank.csv", "financial_phrasebank", [0]),
    ("dialogsum.dev.jsonl", "dialogsum", [0]),
]
CONVERSATION = FIXTURES / "fixtures" / "chat_small.jsonl"
UPDATE = os.environ.get("SFTKIT_UPDATE_GOLDEN") == "1"


def _examples():
    out = []
    for name, spec, rows in SOURCES:
        _, _, examples = open_examples(shared_file(name), spec=spec)
        wanted = set(rows)
        for example in examples:
            if example.row in wanted:
                out.append((f"{name}#{example.row}", example))
            if example.row >= max(rows):
                break
    _, _, chats = open_examples(CONVERSATION, spec="messages")
    out.append(("chat_small.jsonl#0", next(chats)))
    return out


def _mask_string(tokenized):
    return "".join("1" if label != -100 else "0" for label in tokenized.labels)


@pytest.mark.parametrize("template", TEMPLATES)
def test_golden_tokens_and_labels(template, tokenizer, shared_data):
    examples = _examples()
    snapshot = {}
    for key, example in examples:
        entry = {}
        for masking in MASKINGS:
            encoder = Encoder.build(template=template, masking=masking, tokenizer=tokenizer)
            tokenized = encoder.encode(example)
            entry.setdefault("input_ids", tokenized.input_ids)
            assert entry["input_ids"] == tokenized.input_ids, "masking must not change the token ids"
            entry[masking] = _mask_string(tokenized)
            if masking == "prompt_weighted":
                entry["prompt_weighted_weights"] = sorted(set(tokenized.weights))
        snapshot[key] = entry
    path = GOLDEN / f"{template}.json"
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"no snapshot {path}; run with SFTKIT_UPDATE_GOLDEN=1 once and review it")
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(snapshot, indent=0) + "\n")
    expected = json.loads(path.read_text())
    assert snapshot.keys() == expected.keys()
    for key in expected:
        assert snapshot[key]["input_ids"] == expected[key]["input_ids"], f"{template} {key}: token ids moved"
        for masking in MASKINGS:
            got, want = snapshot[key][masking], expected[key][masking]
            if got != want:
                first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b) if len(got) == len(want) else None
                pytest.fail(f"{template} x {masking} on {key}: mask changed (first difference at token {first})")


@pytest.mark.parametrize("template", TEMPLATES)
def test_completion_only_trains_exactly_the_response_and_end(template, tokenizer, shared_data):
    for key, example in _examples():
        encoder = Encoder.build(template=template, masking="completion_only", tokenizer=tokenizer)
        tokenized = encoder.encode(example)
        trained = [t for t, label in zip(tokenized.input_ids, tokenized.labels) if label != -100]
        segments = encoder.segments(example)
        end = [s.text for s in segments if s.part == "end"][-1]
        assert tokenizer.decode(trained) == example.response_text() + end, f"{template} {key}"
        full = Encoder.build(template=template, masking="full", tokenizer=tokenizer).encode(example)
        assert all(label != -100 for label in full.labels)
        assert full.input_ids == tokenized.input_ids


def test_prompt_weighted_weights(tokenizer, shared_data):
    _, example = _examples()[0]
    encoder = Encoder.build(template="alpaca", masking="prompt_weighted", tokenizer=tokenizer,
                            masking_options={"prompt_weight": "0.25"})
    tokenized = encoder.encode(example)
    completion = Encoder.build(template="alpaca", masking="completion_only", tokenizer=tokenizer).encode(example)
    for weight, label in zip(tokenized.weights, completion.labels):
        assert weight == (1.0 if label != -100 else 0.25)


def test_every_builtin_template_and_masking_is_covered():
    registry = get_registry()
    builtin = lambda kind: {n for n, c in registry.components(kind).items() if c.builtin}  # noqa: E731
    assert builtin("templates") == set(TEMPLATES)
    assert builtin("masking_strategies") == set(MASKINGS)
