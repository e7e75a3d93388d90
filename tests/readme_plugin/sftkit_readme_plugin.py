"""A third-party sftkit plugin written from the README's "Writing a plugin" section alone.

A template with a ``system`` option whose Jinja form follows it, a validator, a chrF metric
whose bootstrap uses ``sftkit.corpus``, and a CSV reporter (default-on, so ``--no-reporter
csv`` is how a user switches it off). ``tests/test_readme_plugin.py`` runs the conformance
checks on each and uses them through the command line.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sacrebleu.metrics import CHRF

from sftkit import Issue, Segment, UsageError, hookimpl
from sftkit.corpus import resampled_corpus_score
from sftkit.io import atomic_write_text


# -- template: "User: ... Bot: ..." lines, with a system line from an option ----------------------

def user_bot(example, context, system: str = ""):
    """User: / Bot: lines with an optional system line (the option wins over the data's system turn)."""
    segments = []
    turns = example.turns()
    own = next((i for i, m in enumerate(turns) if m.role == "system"), None)
    if system or own is not None:
        turn = -1 if system else own  # the option's text belongs to no message
        segments.append(Segment("System: ", "system", "marker", turn))
        segments.append(Segment((system or turns[own].content) + "\n", "system", "content", turn))
    for turn, message in enumerate(turns):
        if message.role == "user":
            segments.append(Segment("User: ", "user", "marker", turn))
            segments.append(Segment(message.content, "user", "content", turn))
        elif message.role == "assistant":
            segments.append(Segment(" Bot:", "assistant", "marker", turn))
            segments.append(Segment(" " + message.content, "assistant", "content", turn))
            segments.append(Segment(context.eos_token, "assistant", "end", turn))
            segments.append(Segment("\n", "assistant", "marker", turn))
    return segments


user_bot.markers = ("System:", "User:", " Bot:")  # as they appear in context: " Bot:" follows the user's text


def _jinja(system: str = "") -> str:
    """The chat template for this ``system`` option (embedded as a Jinja string literal)."""
    fixed = json.dumps(system, ensure_ascii=False)
    return (
        "{% set own = messages | selectattr('role', 'equalto', 'system') | list %}"
        "{% set sys = " + fixed + " or (own[0]['content'] if own else '') %}"
        "{% if sys %}{{ 'System: ' + sys + '\\n' }}{% endif %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}{{ 'User: ' + m['content'] }}"
        "{% elif m['role'] == 'assistant' %}{{ ' Bot: ' + m['content'] + eos_token + '\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ ' Bot:' }}{% endif %}"
    )


user_bot.jinja = _jinja


# -- validator: answers longer than a word budget --------------------------------------------------

def answer_length(context, max_words: int = 50):
    """Responses longer than max_words words (the model learns to ramble)."""
    if max_words < 1:
        raise UsageError(f"answer_length: max_words must be at least 1, got {max_words}")
    long_rows, longest = [], 0
    for example in context.examples:
        words = len(example.response_text().split())
        longest = max(longest, words)
        if words > max_words:
            long_rows.append(example.row)
    context.stats["answer_length"] = {"max_words": max_words, "longest": longest, "too_long": len(long_rows)}
    if long_rows:
        yield Issue("answer_length", "long_answer", "warning",
                    f"{len(long_rows)} response(s) longer than {max_words} words", long_rows, {"max_words": max_words})


answer_length.codes = {"long_answer": ("warning", "a response is longer than `max_words` words",
                                       "shorten the responses, or raise answer_length.max_words")}


# -- metric: chrF, corpus aggregate, bootstrap from sacrebleu statistics ----------------------------

def chrf(predictions, references, word_order: int = 0):
    """chrF (0-100): sentence chrF per example; the report's figure is corpus chrF."""
    metric = CHRF(word_order=word_order)
    return {"chrf": [metric.sentence_score(p, [r]).score for p, r in zip(predictions, references)]}


def _aggregate(predictions, references, word_order: int = 0):
    return {"chrf": CHRF(word_order=word_order).corpus_score(list(predictions), [list(references)]).score}


def _resampled(predictions, references, indices, word_order: int = 0):
    return {"chrf": resampled_corpus_score(CHRF(word_order=word_order), predictions, references, indices)}


def _describe(word_order: int = 0):
    metric = CHRF(word_order=word_order)
    metric.corpus_score(["a"], [["a"]])  # sacrebleu knows the reference count only after scoring
    return {"definition": "sacrebleu corpus chrF (0-100); per example: sentence chrF",
            "signature": str(metric.get_signature())}


chrf.aggregate = _aggregate
chrf.resampled = _resampled
chrf.describe = _describe


# -- reporter: one CSV per result kind --------------------------------------------------------------

def _csv(header: list[str], rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def csv_report(result, output_dir: Path):
    """One CSV per result: validate issues, train steps, eval examples with each model's output."""
    data = result.data
    if result.kind == "validate":
        text = _csv(["validator", "code", "severity", "rows", "message"],
                    [[i["validator"], i["code"], i["severity"], len(i["rows"]), i["message"]] for i in data["issues"]])
    elif result.kind == "train":
        text = _csv(["step", "loss", "lr"], [[m["step"], m["loss"], m["lr"]] for m in data["metrics"]])
    elif result.kind == "eval":
        models = list(data["models"])  # keyed by role: read the keys, do not assume two
        subs = list(data["metrics"])
        header = ["row", "reference"] + [f"{model}:{what}" for model in models for what in ["output", *subs]]
        rows = []
        for example in data["examples"]:
            row = [example["row"], example["reference"]]
            for model in models:
                row.append(example["outputs"][model]["text"])
                row += [example["scores"][model].get(sub, "") for sub in subs]
            rows.append(row)
        text = _csv(header, rows)
    else:
        return None
    return atomic_write_text(Path(output_dir) / f"{result.kind}.csv", text)


csv_report.default = True  # runs with json and html unless --no-reporter csv


# -- the hooks ----------------------------------------------------------------------------------------

@hookimpl
def register_templates(register):
    register(user_bot)


@hookimpl
def register_validators(register):
    register(answer_length)


@hookimpl
def register_metrics(register):
    register(chrf)


@hookimpl
def register_reporters(register):
    register(csv_report, name="csv")
