"""Mapping generated text to classification labels, on the real Financial PhraseBank labels."""
from __future__ import annotations

import csv

import pytest

from conftest import shared_file
from sftkit import UsageError
from sftkit.labels import INVALID, LabelMapper, classification_summary, normalise_text

LABELS = ["positive", "negative", "neutral"]


@pytest.fixture(scope="module")
def phrasebank_rows():
    path = shared_file("financial_phrasebank.csv")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        return list(csv.DictReader(handle))


def test_every_real_label_maps_to_itself_in_any_dress(phrasebank_rows):
    labels = sorted({row["label"] for row in phrasebank_rows})
    assert labels == sorted(LABELS)
    mapper = LabelMapper(LABELS)
    for label in labels:
        for dressed in (label, label.upper(), f" {label.title()}.\n", f"{label}!", f"'{label}'", f"**{label}**"):
            mapped = mapper.map(dressed)
            assert (mapped.label, mapped.rule) == (label, "exact"), dressed
        assert mapper.map(f"{label.title()}. The company reported results.").rule == "prefix"
        mapped = mapper.map(f"The sentiment of this financial news sentence is {label}.")
        assert (mapped.label, mapped.rule) == (label, "mention")


@pytest.mark.parametrize("text, reason", [
    ("", "empty output"),
    ("   \n", "empty output"),
    ("The company reported results.", "no label in the output"),
    ("It could be positive or negative.", "several labels: negative, positive"),
    ("positively", "no label in the output"),  # whole words only
])
def test_unmappable_outputs_are_invalid(text, reason):
    mapped = LabelMapper(LABELS).map(text)
    assert mapped.label == INVALID and mapped.rule == "invalid" and mapped.reason == reason


def test_real_sentences_as_outputs_map_only_when_they_name_one_label(phrasebank_rows):
    """A verbose base model often repeats the input: such an output is invalid unless it names a label."""
    mapper = LabelMapper(LABELS)
    for row in phrasebank_rows[:400]:
        mapped = mapper.map(row["content"])
        words = set(normalise_text(row["content"]).split())
        named = [label for label in LABELS if label in words]
        if len(named) == 1:
            assert mapped.label == named[0]
        else:
            assert mapped.label == INVALID


def test_longer_labels_win_over_contained_ones():
    mapper = LabelMapper(["entailment", "not entailment"])
    assert mapper.map("Not entailment.").label == "not entailment"
    assert mapper.map("The answer: not entailment").label == "not entailment"
    assert mapper.map("entailment").label == "entailment"


def test_bad_label_sets_are_rejected():
    with pytest.raises(UsageError):
        LabelMapper([])
    with pytest.raises(UsageError, match="same once normalised"):
        LabelMapper(["Yes", "yes."])
    with pytest.raises(UsageError, match="reserved"):
        LabelMapper(["a", INVALID])


def test_summary_matches_scikit_learn(phrasebank_rows):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    references = [row["label"] for row in phrasebank_rows[:600]]
    mapper = LabelMapper(LABELS)
    # "outputs": every 7th reference replaced by an unmappable sentence, every 5th by another label
    outputs = []
    for i, label in enumerate(references):
        if i % 7 == 0:
            outputs.append(phrasebank_rows[i]["content"] + " maybe positive, maybe negative")
        elif i % 5 == 0:
            outputs.append(LABELS[(LABELS.index(label) + 1) % 3].upper() + ".")
        else:
            outputs.append(f"The sentiment is {label}.")
    mapped = mapper.map_many(outputs)
    predicted = [m.label for m in mapped]
    summary = classification_summary(predicted, references, LABELS, mapped)
    expected = confusion_matrix(references, predicted, labels=LABELS + [INVALID])[:3].tolist()
    assert summary["confusion"] == expected
    assert summary["columns"][-1] == INVALID
    assert summary["invalid"] == sum(1 for i in range(600) if i % 7 == 0)
    assert [row[-1] for row in summary["confusion"]] != [0, 0, 0]  # the invalid column is filled
    p, r, f, s = precision_recall_fscore_support(references, predicted, labels=LABELS, zero_division=0)
    for i, label in enumerate(LABELS):
        assert summary["per_class"][label] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}, abs=1e-12)
    assert summary["rules"]["invalid"] == summary["invalid"] and summary["rules"]["exact"] > 0
