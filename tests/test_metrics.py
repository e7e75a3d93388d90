"""The built-in metrics equal the reference libraries (rouge-score, sacrebleu, scikit-learn) on
real data, and handle the known pitfalls (non-Latin text, Lsum sentences, BLEU tokenizers,
exact-match whitespace and modes, explicit F1 averages, the invalid class)."""
from __future__ import annotations

import csv
import json
import random
import warnings

import numpy as np
import pytest

from conftest import shared_file
from sftkit.plugins.metrics import bleu_metric as bleu_module
from sftkit.plugins.metrics.bleu_metric import bleu
from sftkit.plugins.metrics.classification import accuracy, f1
from sftkit.plugins.metrics.exact import exact_match, normalise
from sftkit.plugins.metrics.rouge_metric import rouge, split_sentences
from sftkit.stats import resample_indices

TOL = 1e-9


def perturb(text: str, rng: random.Random) -> str:
    """A plausible 'prediction': drop, swap and repeat some words of the reference."""
    words = text.split()
    out = [w for w in words if rng.random() > 0.2]
    if len(out) > 3:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    out += rng.sample(words, k=min(3, len(words)))
    return " ".join(out)


@pytest.fixture(scope="module")
def dialogsum():
    path = shared_file("dialogsum.dev.jsonl")
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    rng = random.Random(7)
    references = [r["summary"] for r in rows]
    predictions = [perturb(r, rng) for r in references]
    return predictions, references


@pytest.fixture(scope="module")
def phrasebank():
    path = shared_file("financial_phrasebank.csv")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        labels = [row["label"] for row in csv.DictReader(handle)]
    rng = random.Random(3)
    classes = sorted(set(labels))
    # predictions: right 70% of the time, otherwise another label or an unmappable output
    predictions = [y if rng.random() < 0.7 else rng.choice(classes + ["(invalid)"]) for y in labels]
    return predictions, labels


# -- parity with the reference libraries --------------------------------------------------------

def test_rouge_equals_rouge_score_on_dialogsum(dialogsum):
    from rouge_score import rouge_scorer

    predictions, references = dialogsum
    ours = rouge(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    for i, (p, r) in enumerate(zip(predictions, references)):
        expected = scorer.score(split_sentences(r), split_sentences(p))
        for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            assert abs(ours[name][i] - expected[name].fmeasure) < TOL
    # rouge1/2/L do not depend on the sentence split; Lsum does, and sentences were split
    plain = scorer.score(references[0], predictions[0])
    assert abs(ours["rouge1"][0] - plain["rouge1"].fmeasure) < TOL
    assert any(abs(ours["rougeLsum"][i] - ours["rougeL"][i]) > 1e-6 for i in range(len(references)))
    assert 0.3 < np.mean(ours["rouge1"]) < 1.0


def test_lsum_needs_one_sentence_per_line():
    reference = "Tom is hungry. Mary cooks dinner."
    prediction = "Mary cooks dinner. Tom is hungry."
    assert split_sentences(reference) == "Tom is hungry.\nMary cooks dinner."
    split = rouge([prediction], [reference])
    unsplit = rouge([prediction], [reference], split=False)
    assert split["rougeLsum"][0] == pytest.approx(1.0)  # each sentence matches its counterpart
    assert unsplit["rougeLsum"][0] < 0.9  # one long "sentence": the swapped order costs LCS
    assert unsplit["rougeLsum"][0] == pytest.approx(unsplit["rougeL"][0])


def test_bleu_equals_sacrebleu_corpus_score_on_dialogsum(dialogsum):
    import sacrebleu

    predictions, references = dialogsum
    ours = bleu.aggregate(predictions, references)["bleu"]
    expected = sacrebleu.corpus_bleu(predictions, [references]).score
    assert abs(ours - expected) < TOL
    # per example: sacrebleu's sentence BLEU (effective order)
    per = bleu(predictions[:20], references[:20])["bleu"]
    for p, r, value in zip(predictions, references, per):
        assert abs(value - sacrebleu.sentence_bleu(p, [r]).score) < TOL
    # the signature names the tokenizer and the version
    signature = bleu.describe()["signature"]
    assert "tok:13a" in signature and f"version:{sacrebleu.__version__}" in signature


def test_bleu_bootstrap_replicates_equal_sacrebleu_on_resamples(dialogsum):
    import sacrebleu

    predictions, references = dialogsum
    indices = resample_indices(len(references), resamples=5, seed=1)
    fast = bleu.resampled(predictions, references, indices)["bleu"]
    for rows, value in zip(indices, fast):
        expected = sacrebleu.corpus_bleu([predictions[i] for i in rows], [[references[i] for i in rows]]).score
        assert abs(value - expected) < TOL


def test_accuracy_and_f1_equal_scikit_learn_on_phrasebank(phrasebank):
    from sklearn.metrics import accuracy_score, f1_score

    predictions, references = phrasebank
    assert abs(np.mean(accuracy(predictions, references)["accuracy"]) - accuracy_score(references, predictions)) < TOL
    labels = ["positive", "negative", "neutral"]
    ours = f1.aggregate(predictions, references, labels=labels)
    for average in ("macro", "weighted"):
        expected = f1_score(references, predictions, labels=labels, average=average, zero_division=0)
        assert abs(ours[f"f1_{average}"] - expected) < TOL
    # invalid predictions are never right: F1 over the real labels is below accuracy-free F1 on clean data
    assert "(invalid)" in predictions
    assert ours["f1_macro"] < 0.8


def test_f1_bootstrap_replicates_equal_scikit_learn(phrasebank):
    from sklearn.metrics import f1_score

    predictions, references = phrasebank
    labels = ["positive", "negative", "neutral"]
    indices = resample_indices(len(references), resamples=20, seed=2)
    fast = f1.resampled(predictions, references, indices, average=["macro", "weighted", "micro"], labels=labels)
    for k, rows in enumerate(indices):
        refs = [references[i] for i in rows]
        preds = [predictions[i] for i in rows]
        for average in ("macro", "weighted", "micro"):
            expected = f1_score(refs, preds, labels=labels, average=average, zero_division=0)
            assert abs(fast[f"f1_{average}"][k] - expected) < TOL


def test_f1_needs_a_known_average():
    from sftkit import UsageError

    with pytest.raises(UsageError, match="unknown average"):
        f1(["a"], ["a"], average="binary")
    scores = f1(["a", "b"], ["a", "a"], average="macro")
    assert scores == {"f1_macro": [1.0, 0.0]}


# -- pitfalls ------------------------------------------------------------------------------------

def test_rouge_default_tokenizer_drops_chinese_and_warns():
    text = ["今天天气很好，我们去公园散步。", "नमस्ते दुनिया, यह एक परीक्षण है"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = rouge(text, text)
    assert default["rouge1"] == [0.0, 0.0]  # identical text scores 0: nothing survives [a-z0-9]
    assert any("dropped" in str(w.message) for w in caught)
    chars = rouge(text, text, tokenizer="char")
    words = rouge(text, text, tokenizer="whitespace")
    assert chars["rouge1"] == [1.0, 1.0] and words["rouge1"] == [1.0, 1.0]
    # a partial Chinese match scores between 0 and 1 with characters
    partial = rouge(["今天天气很好"], ["今天天气不好"], tokenizer="char")["rouge1"][0]
    assert 0.5 < partial < 1.0


def test_rouge_no_warning_for_english():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rouge(["The cat sat."], ["A cat sat on the mat."])
    assert not [w for w in caught if "dropped" in str(w.message)]


def test_bleu_chinese_needs_the_zh_tokenizer():
    import sacrebleu

    reference = ["猫坐在垫子上。今天天气很好。"]
    prediction = ["猫坐在垫子上。今天天气不好。"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bleu(prediction, reference)
    assert any("tokenize=zh" in str(w.message) for w in caught)
    default = bleu.aggregate(prediction, reference)["bleu"]
    zh = bleu.aggregate(prediction, reference, tokenize="zh")["bleu"]
    assert default == pytest.approx(0.0)  # one "word" each: no 1-gram in common
    assert zh > 30 and abs(zh - sacrebleu.corpus_bleu(prediction, [reference], tokenize="zh").score) < TOL
    assert "tok:zh" in bleu.describe(tokenize="zh")["signature"]


def test_bleu_references_are_one_stream_of_segments():
    # with references passed as [stream][segment], each hypothesis meets its own reference
    predictions = ["the cat is on the mat today", "a dog barks at the mailman loudly"]
    references = ["the cat is on the mat today", "a dog barks at the mailman loudly"]
    assert bleu.aggregate(predictions, references)["bleu"] == pytest.approx(100.0)


def test_exact_match_modes():
    assert exact_match(["Paris\n"], ["Paris"], mode="strict")["exact_match"] == [1.0]
    assert exact_match(["paris"], ["Paris"], mode="strict")["exact_match"] == [0.0]
    assert exact_match(["Paris\n"], ["Paris"])["exact_match"] == [1.0]
    assert exact_match(["The Eiffel  Tower!"], ["eiffel tower"])["exact_match"] == [1.0]
    assert exact_match(["Eiffel Towers"], ["eiffel tower"])["exact_match"] == [0.0]
    assert normalise("  An apple, the PEAR.\n") == "apple pear"
    regex = exact_match(["I think the answer is 42.", "no idea", "answer is 41"], ["42", "42", "42"],
                        mode="regex", pattern=r"answer is (\d+)")
    assert regex["exact_match"] == [1.0, 0.0, 0.0]
    assert exact_match.describe(mode="strict")["mode"] == "strict"


def test_exact_match_rejects_bad_options():
    from sftkit import UsageError

    with pytest.raises(UsageError, match="unknown mode"):
        exact_match(["a"], ["a"], mode="fuzzy")
    with pytest.raises(UsageError, match="needs a pattern"):
        exact_match(["a"], ["a"], mode="regex")
    with pytest.raises(UsageError, match="bad pattern"):
        exact_match(["a"], ["a"], mode="regex", pattern="(")


def test_metric_options_are_checked_through_the_registry():
    from sftkit import UsageError
    from sftkit.testing import fresh_registry

    registry = fresh_registry()
    assert {"rouge", "bleu", "exact_match", "accuracy", "f1"} <= set(registry.components("metrics"))
    with pytest.raises(UsageError, match="no option 'tokeniser'"):
        registry.resolve("metrics", "rouge", {"tokeniser": "char"})
    bound = registry.resolve("metrics", "f1", {"average": "macro"})
    assert bound.options["average"] == ["macro"]


def test_bleu_module_exposes_sufficient_statistics(dialogsum):
    predictions, references = dialogsum
    stats = bleu_module.segment_statistics(predictions[:50], references[:50])
    assert stats.shape == (50, 10)
    import sacrebleu

    assert abs(bleu_module.score_from_statistics(stats)
               - sacrebleu.corpus_bleu(predictions[:50], [references[:50]]).score) < TOL
