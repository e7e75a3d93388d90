"""Sample inputs of the conformance checks: examples, segments and results."""
from __future__ import annotations

from sftkit.types import Example, Issue, Message, Result, Segment

# A string that must never reach an HTML or Markdown report unescaped.
XSS = '<script>alert("sftkit")</script>'


def sample_examples() -> list[Example]:
    """Small canonical examples: with and without input, a system prompt, a conversation, odd text."""
    return [
        Example(instruction="Translate to French.", input="Good morning", output="Bonjour", row=0),
        Example(instruction="Name a primary colour.", output="Red.", row=1),
        Example(instruction="Summarise the text.", input="The meeting moved to Friday at noon.",
                output="Meeting: Friday, noon.", system="You are concise.", row=2),
        Example(messages=[Message("system", "Be brief."), Message("user", "Hi there"),
                          Message("assistant", "Hello!"), Message("user", "What is 2+2?"),
                          Message("assistant", "4")], row=3),
        Example(instruction=f"Repeat {{this}} exactly: {XSS} ### Response: 😀",
                output=f"{{this}} {XSS} 😀", row=4),
    ]


def reference_segments(example: Example, eos: str = "</s>") -> list[Segment]:
    segments = []
    for index, message in enumerate(example.turns()):
        segments.append(Segment(f"<{message.role}>\n", message.role, "marker", index))
        segments.append(Segment(message.content, message.role, "content", index))
        if message.role == "assistant":
            segments.append(Segment(eos, "assistant", "end", index))
            segments.append(Segment("\n", "assistant", "marker", index))
    return segments


def sample_results() -> list[Result]:
    """One Result per kind (validate, train, eval) shaped exactly as the commands produce them,
    plus one of a kind no reporter knows.

    Each follows its JSON Schema (``sftkit.schemas``, ``schema_version`` included) and holds
    every field the real commands write (sftkit's tests check both against real runs), and
    data strings a report must escape (``XSS``). The first eval result compares two models
    (``tuned`` and ``base``) on classification data, so it has the optional parts too:
    ``classification``, per-output ``label``/``rule``, ``difference`` and ``change``; the
    second is an N-way run (``base``, ``model_1``, ``model_2``: ``reference``,
    ``comparisons``, ``changes``).
    """
    return [Result("validate", f"sftkit validate: {XSS}.jsonl", _validate_data()),
            Result("train", "sftkit train: tiny-random (lora)", _train_data()),
            Result("eval", f"sftkit eval: runs/{XSS} on test.jsonl", _eval_data()),
            Result("eval", f"sftkit eval: runs/a, runs/{XSS} on test.jsonl", _eval_several_data()),
            Result("a_kind_this_reporter_does_not_know", "unknown kind", {"text": XSS})]


def _skipped(line: int) -> dict:
    return {"line": line, "row": None, "message": f"line {line}: not valid JSON ({XSS})"}


def _validate_data() -> dict:
    issues = [
        Issue("consistency", "template_marker_in_content", "error", f"'### Response:' appears in 1 row: {XSS}",
              [1], {"marker": "### Response:"}).to_dict(),
        Issue("quality", "short_output", "warning", "output shorter than 3 characters in 1 row", [0],
              {"default_severity": "error"}).to_dict(),
        Issue("balance", "class_imbalance", "info", "one label in 2 of 3 rows", [0, 2]).to_dict(),
    ]
    return {
        "schema_version": 1,
        "summary": {"rows": 3, "errors": 1, "warnings": 1, "infos": 1},
        "issues": issues,
        "stats": {"tokenization": {"rows": 3, "max_length": 1024, "tokens_p50": 40.0, "lengths_sample": [38, 40, 52]},
                  "leakage": {"skipped": "no eval data (--eval-data)"}},
        "dataset": {"path": f"data/{XSS}.jsonl", "spec": "alpaca", "note": "detected format alpaca from the columns",
                    "format": "alpaca", "task": "generation", "template": "alpaca", "masking": "completion_only",
                    "max_length": 1024, "validators": ["consistency", "quality", "balance", "tokenization", "leakage"],
                    "skipped_lines": [_skipped(4)]},
        "examples": {"0": {"row": 0, "prompt": "Say hi\n\nplease", "response": "Hi", "input": "please",
                           "label": "greeting"},
                     "1": {"row": 1, "prompt": f"Repeat {XSS}", "response": f"### Response: {XSS}"},
                     "2": {"row": 2, "prompt": "Name a colour.", "response": "Red."}},
        "token_views": [{"row": 1, "reason": "template_marker_in_content",
                         "tokens": [["Repeat", 0.0], [" <script>", 0.0], ["###", 1.0], ["</s>", 1.0]],
                         "trained": 2, "length": 4}],
        "timings": {"consistency": 0.01, "quality": 0.02, "balance": 0.0, "tokenization": 0.1, "leakage": 0.0},
    }


def _source_stats(rows: int) -> dict:
    return {"rows": rows, "skipped_lines": 0, "used": rows, "dropped_no_trained_tokens": 0, "truncated": 0,
            "tokens": 40 * rows, "trained_tokens": 4 * rows, "mean_length": 40.0, "max_length": 44}


def _train_data() -> dict:
    step = {"epoch": 0.5, "lr": 0.0002, "grad_norm": 0.7, "tokens": 320, "trained_tokens": 32, "seconds": 0.1,
            "tokens_per_s": 3200.0, "trained_tokens_per_s": 320.0, "rank_trained_tokens": [32]}
    return {
        "schema_version": 1,
        "run_dir": f"runs/{XSS}",
        "summary": {"model": "tiny-random", "method": "lora", "steps": 2, "planned_steps": 2, "first_loss": 2.5,
                    "final_loss": 2.25, "best_eval_loss": 2.4, "stopped_early": False, "tokens": 640,
                    "trained_tokens": 64, "train_seconds": 0.2, "tokens_per_s": 3200.0, "trained_tokens_per_s": 320.0,
                    "trainable_parameters": 32768, "parameters": 3252544, "template": "alpaca",
                    "masking": "completion_only", "packing": True, "processes": 1, "replicas_in_sync": True,
                    "engine": "no", "device": "cpu", "attention": "sftkit_packed"},
        "settings": {"data": [{"path": f"{XSS}.jsonl", "weight": 1.0, "spec": None}], "model": "tiny-random",
                     "method": "lora", "max_steps": 2, "template_options": {"system": XSS}},
        "data": [{"path": f"{XSS}.jsonl", "weight": 1.0, **_source_stats(16), "spec": "alpaca",
                  "skipped": [_skipped(9)]}],
        "eval_data": {"path": "eval.jsonl", **_source_stats(4)},
        "added_tokens": ["###instruction###"],
        "validation": {f"{XSS}.jsonl": {"rows": 16, "errors": 0, "warnings": 1, "infos": 0}},
        "metrics": [{"step": 1, **step, "loss": 2.5}, {"step": 2, **step, "epoch": 1.0, "loss": 2.25}],
        "eval_metrics": [{"step": 1, "eval_loss": 2.45}, {"step": 2, "eval_loss": 2.4}],
    }


def _provenance(model: str) -> dict:
    generation = {"max_new_tokens": 16, "batch_size": 16, "decoding": "greedy", "padding": "left",
                  "max_batch_tokens": 4096, "generator": "hf", "generator_version": "transformers 4.56.1",
                  "generator_options": {"batch_size": 16, "max_batch_tokens": 4096, "share_prefix": True}}
    return {"template": "alpaca", "template_options": {"system": XSS}, "system_prompt": XSS, "generation": generation,
            "generator": "hf", "generator_version": "transformers 4.56.1", "prompt_set_sha256": "ab" * 32,
            "prompts": 2, "data": f"{XSS}.jsonl", "data_sha256": "cd" * 32, "data_rows": 3, "sftkit_version": "0.1.0",
            "model": model}


def _eval_data() -> dict:
    def interval(value: float) -> dict:
        return {"value": value, "low": max(0.0, value - 0.25), "high": min(1.0, value + 0.25)}

    def per_class(f1: float) -> dict:
        return {"precision": f1, "recall": f1, "f1": f1, "support": 1}

    def classification(right: int) -> dict:
        return {"labels": ["negative", "positive"], "columns": ["negative", "positive", "(invalid)"],
                "confusion": [[1, 0, 0], [1 - right, right, 0]] if right else [[0, 0, 1], [0, 0, 1]],
                "per_class": {"negative": per_class(float(right)), "positive": per_class(float(right))},
                "invalid": 0 if right else 2,
                "rules": {"exact": 2 * right, "prefix": 0, "mention": 0, "invalid": 0 if right else 2}}

    def output(text: str, label: str, rule: str, stopped: str = "eos") -> dict:
        return {"text": text, "stopped": stopped, "tokens": 3, "label": label, "rule": rule}

    scores = {"tuned": {"accuracy": 1.0, "exact_match": 1.0}, "base": {"accuracy": 0.0, "exact_match": 0.0}}
    return {
        "schema_version": 1,
        "data": f"{XSS}.jsonl", "rows": 2, "limit": None, "spec": "financial_phrasebank",
        "spec_note": "spec financial_phrasebank (from the run folder)", "task": "classification",
        "template": "alpaca", "template_options": {"system": XSS},
        "models": {
            "tuned": {"name": f"runs/{XSS}", "run": {"base_model": "tiny-random", "method": "lora", "template": "alpaca",
                                                     "masking": "completion_only", "max_length": 1024,
                                                     "added_tokens": []},
                      "seconds": 0.2, "tokens": 6, "provenance": _provenance(f"runs/{XSS}")},
            "base": {"name": "tiny-random", "run": None, "seconds": 0.2, "tokens": 16,
                     "provenance": _provenance("tiny-random")},
        },
        "generation": {"max_new_tokens": 16, "batch_size": 16, "decoding": "greedy", "padding": "left",
                       "max_batch_tokens": 4096, "generator": "hf", "generator_version": "transformers 4.56.1",
                       "generator_options": {"batch_size": 16, "max_batch_tokens": 4096, "share_prefix": True}},
        "bootstrap": {"resamples": 1000, "seed": 0, "confidence": 0.95, "interval": "percentile",
                      "p_value": "paired, shifted to the null (Berg-Kirkpatrick et al. 2012), two-sided"},
        "metric_info": {"accuracy": {"options": {}, "definition": "share of outputs mapped to the reference label"},
                        "exact_match": {"options": {"mode": "normalised"}, "mode": "normalised",
                                        "definition": f"equal after normalising ({XSS})"}},
        "metrics": {sub: {"metric": sub, "aggregate": "mean", "tuned": interval(1.0), "base": interval(0.0),
                          "difference": {"value": 1.0, "low": 1.0, "high": 1.0, "p_value": 0.0, "significant": True}}
                    for sub in ("accuracy", "exact_match")},
        "primary": "accuracy",
        "headline": ["accuracy"],
        "warnings": [{"model": "base", "code": "hit_max_new_tokens", "rows": [0, 1],
                      "message": f"base: 2 of 2 generations hit --max-new-tokens 16 without stopping ({XSS})"},
                     {"model": "base", "code": "invalid_share", "rows": [0, 1],
                      "message": "base: 2 of 2 outputs (100.0%) map to no label, more than --max-invalid-share 0.1"}],
        "skipped_lines": [_skipped(3)],
        "breakdown": {"by": "label", "source": "the reference label", "min_rows": 10, "groups": [
            {"value": label, "rows": 1,
             "metrics": {sub: {"metric": sub, "aggregate": "mean", "tuned": interval(1.0), "base": interval(0.0),
                               "difference": {"value": 1.0, "low": 1.0, "high": 1.0, "p_value": 0.5,
                                              "significant": True}} for sub in ("accuracy", "exact_match")}}
            for label in ("negative", "positive")]},
        "classification": {"labels": ["negative", "positive"],
                           "models": {"tuned": classification(1), "base": classification(0)},
                           "invalid": {"tuned": [], "base": [{"row": 0, "output": XSS, "reason": "no label in the output"},
                                                             {"row": 1, "output": "", "reason": "empty output"}]}},
        "examples": [
            {"row": 0, "prompt": f"### Instruction:\nClassify: {XSS}\n\n### Response:\n", "reference": "negative",
             "outputs": {"tuned": output("negative", "negative", "exact"),
                         "base": output(XSS, "(invalid)", "invalid", "max_new_tokens")},
             "scores": scores, "change": {"accuracy": 1.0, "exact_match": 1.0}, "group": "negative",
             "prompt_sha256": "01" * 32},
            {"row": 1, "prompt": "### Instruction:\nClassify: Profits rose.\n\n### Response:\n",
             "reference": "positive",
             "outputs": {"tuned": output("positive", "positive", "exact"),
                         "base": output("", "(invalid)", "invalid", "max_new_tokens")},
             "scores": scores, "change": {"accuracy": 1.0, "exact_match": 1.0}, "group": "positive",
             "prompt_sha256": "02" * 32},
        ],
    }


def _eval_several_data() -> dict:
    """The eval sample as an N-way run: base (the reference), model_1 and model_2."""
    import copy

    data = copy.deepcopy(_eval_data())
    keys = {"base": "base", "tuned": "model_1"}

    def rekey(mapping: dict) -> dict:
        out = {keys[k]: v for k, v in mapping.items()}
        out["model_2"] = copy.deepcopy(mapping["tuned"])
        return {k: out[k] for k in ("base", "model_1", "model_2")}

    data["models"] = rekey(data["models"])
    data["models"]["model_2"]["name"] = "runs/b"
    data["reference"] = "base"
    data["bootstrap"]["correction"] = ("Holm-Bonferroni over the 2 comparison(s) with the reference base, per "
                                       "sub-metric (p_holm); every comparison uses the same 1000 resamples")
    for entry in data["metrics"].values():
        difference = entry.pop("difference")
        for key in ("base", "tuned"):
            entry[keys[key]] = entry.pop(key)
        entry["model_2"] = dict(entry["model_1"])
        entry["comparisons"] = {key: {**difference, "p_holm": 0.002, "significant_holm": True}
                                for key in ("model_1", "model_2")}
    for group in data["breakdown"]["groups"]:
        for entry in group["metrics"].values():
            difference = entry.pop("difference")
            for key in ("base", "tuned"):
                entry[keys[key]] = entry.pop(key)
            entry["model_2"] = dict(entry["model_1"])
            entry["comparisons"] = {key: {**difference, "p_holm": 1.0, "significant_holm": False}
                                    for key in ("model_1", "model_2")}
    classification = data["classification"]
    classification["models"] = rekey(classification["models"])
    classification["invalid"] = rekey(classification["invalid"])
    for example in data["examples"]:
        change = example.pop("change")
        example["outputs"] = rekey(example["outputs"])
        example["scores"] = rekey(example["scores"])
        example["changes"] = {"model_1": dict(change), "model_2": dict(change)}
    return data
