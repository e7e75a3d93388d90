"""Every built-in component passes the conformance check of its kind (sftkit.testing).

The parameters are read from the registry at collection time, so a component added to the
built-ins later is checked without editing this file. The second half shows that each check
can fail: a component breaking its contract is caught with a message naming the problem.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftkit import DataError, Example, Issue, Result, Segment
from sftkit.hookspecs import KINDS
from sftkit.testing import (
    ConformanceError,
    check_generator,
    check_loader,
    check_masking_strategy,
    check_metric,
    check_reporter,
    check_template,
    check_validator,
    fresh_registry,
    sample_examples,
    sample_results,
    validation_context,
)

BUILTINS = fresh_registry()
FIXTURES = Path(__file__).parent / "data" / "fixtures"


def builtin(kind: str) -> list:
    return [pytest.param(name, id=name) for name in sorted(BUILTINS.components(kind))]


def test_every_kind_has_builtins_and_a_check():
    """A kind without built-ins would make its parametrized test below vacuous."""
    import sftkit.testing as testing

    for kind in KINDS:
        assert BUILTINS.components(kind), f"no built-in {kind}"
    checks = {name for name in dir(testing) if name.startswith("check_")}
    assert checks == {"check_loader", "check_template", "check_masking_strategy", "check_validator",
                      "check_metric", "check_reporter", "check_generator"}


# -- built-ins ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", builtin("templates"))
def test_builtin_template(name, tokenizer):
    rendered = check_template(BUILTINS.get("templates", name), tokenizer=tokenizer)
    assert len(rendered) == len(sample_examples())


@pytest.mark.parametrize("name", builtin("masking_strategies"))
def test_builtin_masking_strategy(name):
    weights = check_masking_strategy(BUILTINS.get("masking_strategies", name))
    assert all(any(w > 0 for w in ws) for ws in weights)


RECORDS = [{"instruction": "Say hi", "input": "", "output": "Hi"},
           {"instruction": "Add 2 and 2", "input": "2+2", "output": "4"}]


def _write_sample(path: Path, records: list[dict]) -> None:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif suffix in (".csv", ".tsv", ".tab"):
        sep = "," if suffix == ".csv" else "\t"
        lines = [sep.join(records[0])] + [sep.join(r.values()) for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif suffix in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        raise KeyError(suffix)


MALFORMED = {".jsonl": '{"instruction": "a"}\n{broken\n', ".ndjson": "{broken\n", ".json": '[{"a": 1},',
             ".csv": "instruction,output\na,b,c,d\n", ".tsv": "instruction\toutput\na\tb\tc\n",
             ".tab": "instruction\toutput\na\tb\tc\n", ".parquet": "not parquet", ".pq": "not parquet"}


@pytest.mark.parametrize("name", builtin("loaders"))
def test_builtin_loader(name, tmp_path):
    component = BUILTINS.get("loaders", name)
    suffixes = getattr(component.func, "suffixes", ())
    if suffixes:
        sample, broken = tmp_path / f"sample{suffixes[0]}", tmp_path / f"broken{suffixes[0]}"
        _write_sample(sample, RECORDS)
        broken.write_text(MALFORMED[suffixes[0]], encoding="utf-8")
    elif getattr(component.func, "matches", None) is not None:  # a folder format (datasets save_to_disk)
        from datasets import Dataset

        sample, broken = tmp_path / "sample_ds", tmp_path / "broken_ds"
        Dataset.from_list(RECORDS).save_to_disk(str(sample))
        broken.mkdir()
        (broken / "dataset_info.json").write_text("{not json", encoding="utf-8")
        assert component.func.matches(sample) and not component.func.matches(tmp_path / "x.json")
    else:
        pytest.fail(f"loader {name!r} has neither suffixes nor matches: add a sample writer for it here")
    assert check_loader(component, sample, records=RECORDS, malformed=broken) == RECORDS


def _validation_records() -> list[dict]:
    rows = [{"instruction": e.instruction, "input": e.input, "output": e.output}
            for e in sample_examples() if not e.is_conversation]
    return rows + [dict(rows[0])]  # an exact duplicate


@pytest.mark.parametrize("name", builtin("validators"))
def test_builtin_validator(name, tokenizer):
    context = validation_context(records=_validation_records(), tokenizer=tokenizer,
                                 eval_records=_validation_records()[:1])
    issues = check_validator(BUILTINS.get("validators", name), context)
    assert all(isinstance(issue, Issue) for issue in issues)


METRIC_OPTIONS = {"evaluate": {"path": str(Path(__file__).parent / "data" / "evaluate_metric" / "char_overlap")}}


@pytest.mark.parametrize("name", builtin("metrics"))
def test_builtin_metric(name):
    scores = check_metric(BUILTINS.get("metrics", name), options=METRIC_OPTIONS.get(name))
    assert all(len(values) == 4 for values in scores.values())


@pytest.fixture(scope="module")
def realistic_results(tmp_path_factory) -> list[Result]:
    """validate and eval results as the engines produce them, on data holding a <script> string."""
    from sftkit.testing import XSS

    data = tmp_path_factory.mktemp("reporter_data") / "data.jsonl"
    rows = [{"instruction": f"Repeat {XSS}", "input": "", "output": XSS},
            {"instruction": "Say hi", "input": "", "output": "Hi"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    results = {r.kind: r for r in sample_results()}  # train: the generic sample (training costs minutes)
    from conftest import validate_file

    results["validate"] = validate_file(data, spec="alpaca", model=None)
    from sftkit.eval.engine import EvalSettings, run_eval
    from sftkit.pipeline import DataRequest, RenderSettings

    report = run_eval(DataRequest(str(data), spec="alpaca"), RenderSettings(),
                      EvalSettings("tiny-random", metrics=("exact_match",), no_compare=True, max_new_tokens=2,
                                   resamples=100))
    results["eval"] = Result("eval", f"eval {XSS}", report)
    return list(results.values())


@pytest.mark.parametrize("name", builtin("reporters"))
def test_builtin_reporter(name, tmp_path, realistic_results):
    written = check_reporter(BUILTINS.get("reporters", name), tmp_path, results=realistic_results)
    assert {kind for kind, path in written.items() if path is not None} >= {"validate", "train", "eval"}


# -- each check can fail -----------------------------------------------------------------------

def no_end(example, context):
    """A template that forgets the end-of-turn segment."""
    return [Segment(example.prompt_text(), "user", "content", 0), Segment(example.output, "assistant", "content", 1)]


def response_as_marker(example, context):
    """A template that tags the response as a marker (nothing would train)."""
    return [Segment(example.prompt_text(), "user", "content", 0), Segment(example.output, "assistant", "marker", 1),
            Segment("</s>", "assistant", "end", 1)]


def returns_text(example, context):
    """A template returning a string."""
    return example.prompt_text()


@pytest.mark.parametrize("template, message", [
    (no_end, "has no part='end' segment"),
    (response_as_marker, "no segment has role='assistant', part='content'"),
    (returns_text, "expected a list of sftkit.Segment"),
])
def test_check_template_catches(template, message):
    with pytest.raises(ConformanceError, match=message.replace("(", r"\(").replace("[", r"\[")) as caught:
        check_template(template)
    assert f"template {template.__name__!r} (plugin (under test))" in str(caught.value)


def test_check_template_compares_the_jinja_form(tokenizer):
    def qa(example, context):
        """Q:/A: with a Jinja form that forgets the end token."""
        return [Segment("Q: ", "user", "marker", 0), Segment(example.prompt_text(), "user", "content", 0),
                Segment(" A:", "assistant", "marker", 1), Segment(example.response_text(), "assistant", "content", 1),
                Segment(context.eos_token, "assistant", "end", 1)]

    qa.jinja = ("{% for m in messages %}{% if m.role == 'user' %}Q: {{ m.content }}{% elif m.role == 'assistant' %}"
                " A:{{ m.content }}{% endif %}{% endfor %}{% if add_generation_prompt %} A:{% endif %}")
    single = [Example(instruction="Say hi", output="hi")]
    with pytest.raises(ConformanceError,
                       match="the jinja chat template renders 'Q: Say hi A:hi', the template 'Q: Say hi A:hi<"):
        check_template(qa, examples=single, tokenizer=tokenizer)
    qa.jinja = qa.jinja.replace("{% endif %}{% endfor %}", "{{ eos_token }}{% endif %}{% endfor %}")
    assert check_template(qa, examples=single, tokenizer=tokenizer)[0][-1].text == tokenizer.eos_token


def test_check_template_needs_a_docstring_and_a_signature():
    def nodoc(example, context):
        return no_end(example, context)

    def one_arg(example):
        """Takes one argument."""

    with pytest.raises(ConformanceError, match="no docstring"):
        check_template(nodoc)
    with pytest.raises(ConformanceError, match=r"takes 1 positional argument\(s\) but sftkit passes 2"):
        check_template(one_arg)


def short(segments):
    """One weight too few."""
    return [1.0] * (len(segments) - 1) if segments else []


def too_heavy(segments):
    """Weights above 1."""
    return [2.0] * len(segments)


def trains_nothing(segments):
    """Masks everything."""
    return [0.0] * len(segments)


@pytest.mark.parametrize("strategy, message", [
    (short, "weights for"), (too_heavy, r"in \[0, 1\], got 2.0"), (trains_nothing, "no segment trains"),
])
def test_check_masking_strategy_catches(strategy, message):
    with pytest.raises(ConformanceError, match=message):
        check_masking_strategy(strategy)


def test_check_loader_catches(tmp_path):
    good = tmp_path / "a.jsonl"
    good.write_text('{"a": 1}\n', encoding="utf-8")

    def crashing(path):
        """Raises a bare ValueError on bad input instead of DataError."""
        for line in path.read_text().splitlines():
            yield json.loads(line)

    def not_records(path):
        """Returns a dict."""
        return {"a": 1}

    broken = tmp_path / "b.jsonl"
    broken.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(ConformanceError, match="raised JSONDecodeError.*raise sftkit.DataError"):
        check_loader(crashing, good, malformed=broken)
    with pytest.raises(ConformanceError, match="returned dict, expected an iterable of dicts"):
        check_loader(not_records, good)
    with pytest.raises(ConformanceError, match="differ from the 2 expected"):
        check_loader(crashing, good, records=[{"a": 1}, {"a": 2}])

    def ignores_skip_invalid(path, skip_invalid: bool = False):
        """Claims to skip broken lines but raises anyway."""
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise DataError("bad JSON", path=str(path), line=number) from None

    broken.write_text('{"a": 1}\n{oops\n', encoding="utf-8")
    with pytest.raises(ConformanceError, match="with skip_invalid=True, reading the malformed b.jsonl still raised "
                                               "for line 2"):
        check_loader(ignores_skip_invalid, good, malformed=broken)


def test_check_validator_catches():
    def sloppy(context):
        """Bad severity, a row past the end, a code with spaces."""
        yield Issue("sloppy", "Bad Code", "fatal", "x", rows=[99])
        yield Issue("copied_from_elsewhere", "ok_code", "info", "y", rows=[0])

    with pytest.raises(ConformanceError) as caught:
        check_validator(sloppy, validation_context([Example(instruction="a", output="b")]))
    text = str(caught.value)
    assert "snake_case" in text and "severity 'fatal'" in text and "below 1, got [99]" in text
    assert "Issue.validator is 'copied_from_elsewhere'; it must be the validator's name 'sloppy'" in text


def test_check_metric_catches():
    def one_score(predictions, references):
        """A corpus score instead of one per example."""
        return {"score": [0.5]}

    def nan(predictions, references):
        """NaN scores."""
        return {"score": [float("nan")] * len(predictions)}

    def length(predictions, references):
        """Characters per prediction, with a wrong fast bootstrap path and bad attributes."""
        return {"length": [float(len(p)) for p in predictions]}

    length.resampled = lambda predictions, references, indices: {"length": [sum(map(len, predictions))] * len(indices)}
    length.describe = lambda: {"unit": 1}
    length.input = "tokens"

    with pytest.raises(ConformanceError, match="expected a list of 4 scores"):
        check_metric(one_score)
    with pytest.raises(ConformanceError, match="finite numbers"):
        check_metric(nan)
    with pytest.raises(ConformanceError) as caught:
        check_metric(length)
    text = str(caught.value)
    assert ("resampled['length'] is 54.0 on resample [0, 1, 2, 3], but scoring that resample directly gives 13.5"
            in text)
    assert "describe must return a dict of strings" in text and "input must be 'text' or 'label'" in text


def test_check_reporter_catches(tmp_path):
    def unescaped(result, output_dir):
        """Writes data into HTML as is."""
        path = Path(output_dir) / "r.html"
        path.write_text(f"<h1>{result.title}</h1>{result.data}")
        return path

    def outside(result, output_dir):
        """Writes next to the output folder."""
        path = Path(output_dir).parent / "elsewhere.txt"
        path.write_text("x")
        return path

    with pytest.raises(ConformanceError, match="unescaped <script>"):
        check_reporter(unescaped, tmp_path / "a")
    with pytest.raises(ConformanceError, match="outside the output folder"):
        check_reporter(outside, tmp_path / "b")


def test_check_accepts_options_and_rejects_unknown_ones():
    weights = check_masking_strategy(BUILTINS.get("masking_strategies", "prompt_weighted"),
                                     options={"prompt_weight": "0.25"})
    assert 0.25 in weights[0]
    with pytest.raises(ConformanceError, match="(?s)has no option 'bogus'.*accepted options: prompt_weight"):
        check_masking_strategy(BUILTINS.get("masking_strategies", "prompt_weighted"), options={"bogus": 1})


# -- generators ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def varied_model():
    from sftkit.testing import varied_tiny_model

    return varied_tiny_model(seed=1)


@pytest.mark.parametrize("name", builtin("generators"))
def test_builtin_generator(name, varied_model):
    """Every built-in equals one-at-a-time decoding where it can run (vLLM: a GPU and vllm installed)."""
    from sftkit.testing import GeneratorUnavailable

    try:
        outputs = check_generator(BUILTINS.get("generators", name), model=varied_model)
    except GeneratorUnavailable as exc:
        pytest.skip(str(exc))
    assert len(outputs) == 4 and all(g.tokens >= 1 for g in outputs)


def _hf_then(change):
    """A generator that runs the built-in hf and then breaks its output with ``change``."""
    def broken(model, tokenizer, prompt_ids, stops, max_new_tokens):
        """A deliberately broken generator (tests)."""
        from sftkit.generate import generate_ids

        return change(generate_ids(model, tokenizer, prompt_ids, stops, max_new_tokens=max_new_tokens,
                                   progress=False), stops, tokenizer, max_new_tokens)
    return broken


def _ignore_stops(model, tokenizer, prompt_ids, stops, max_new_tokens):
    """Stops only at EOS, ignoring the end-of-turn ids and strings it is given (broken, tests)."""
    from sftkit.generate import Stops, generate_ids

    eos = Stops(stops.eos_ids, (), stops.eos_ids)
    return generate_ids(model, tokenizer, prompt_ids, eos, max_new_tokens=max_new_tokens, progress=False)


def _sampled(model, tokenizer, prompt_ids, stops, max_new_tokens):
    """Samples instead of greedy decoding (broken, tests)."""
    import torch

    from sftkit.generate import finish

    torch.manual_seed(0)
    out = []
    for ids in prompt_ids:
        tensor = torch.tensor([list(ids)])
        output = model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), do_sample=True,
                                temperature=5.0, max_new_tokens=max_new_tokens, pad_token_id=0)
        out.append(finish(tokenizer, output[0, len(ids):].tolist(), stops, max_new_tokens))
    return out


@pytest.mark.parametrize("generator, message", [
    (_hf_then(lambda out, *_: out[::-1]), "one-at-a-time greedy decoding gives"),
    (_hf_then(lambda out, *_: [{"text": g.text} for g in out]), "not a sftkit.generate.Generation"),
    (_hf_then(lambda out, *_: out[:-1]), "one per prompt"),
    (_ignore_stops, "a generated token as stop id"),
    (_ignore_stops, "stop string"),
    (_sampled, "one-at-a-time greedy decoding gives"),
])
def test_check_generator_catches(generator, message, varied_model):
    with pytest.raises(ConformanceError) as caught:
        check_generator(generator, model=varied_model)
    assert message in str(caught.value)
