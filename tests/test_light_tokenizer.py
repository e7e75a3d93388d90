"""The torch-free tokenizer (sftkit.light_tokenizer) gives transformers' ids and offsets: on
the demo data and 500 rows of each shared data set, rendered as training renders them, and on
the raw field texts; falls back to transformers where a folder needs it; `sftkit validate`
with the tokenizer imports neither torch nor transformers."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest
from conftest import ROOT, shared_file, validate_file

from sftkit.light_tokenizer import LightTokenizer, plain_config
from sftkit.models import load_tokenizer, resolve_model_path

DEMO = ROOT / "demo" / "financial_sentiment"
ROWS = 500


@pytest.fixture(scope="module", params=["smollm2-135m", "tiny-random"])
def pair(request):
    light = load_tokenizer(request.param, light=True)
    assert isinstance(light, LightTokenizer) and light._full_tokenizer is None
    return light, load_tokenizer(request.param)


def encodings(path, spec, template, tokenizer, rows=ROWS):
    from sftkit.pipeline import DataRequest, RenderSettings, prepare

    prepared = prepare(DataRequest(str(path), spec=spec), RenderSettings(template=template), tokenizer=tokenizer)
    return [prepared.encoder.encode(example) for example in islice(prepared.examples(), rows)]


def datasets():
    yield DEMO / "train.jsonl", str(DEMO / "spec.yaml")
    for name, spec in (("dialogsum.dev.jsonl", "dialogsum"), ("self_instruct_seed_tasks.jsonl", "self_instruct"),
                       ("code_alpaca_2k.json", "alpaca"), ("financial_phrasebank.csv", "financial_phrasebank")):
        yield shared_file(name), spec


def test_special_tokens_vocab_and_pieces_equal_transformers(pair):
    light, full = pair
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(light, name) == getattr(full, name)
        assert getattr(light, name + "_id") == getattr(full, name + "_id")
    assert light.get_vocab() == full.get_vocab() and len(light) == len(full)
    ids = list(range(0, 49152, 97))
    assert light.convert_ids_to_tokens(ids) == full.convert_ids_to_tokens(ids)
    assert light.convert_ids_to_tokens(5) == full.convert_ids_to_tokens(5)
    assert light._full_tokenizer is None  # all of that without transformers


@pytest.mark.parametrize("template", ["alpaca", "chatml"])
def test_training_encodings_equal_transformers_on_real_data(pair, template):
    light, full = pair
    compared = 0
    for path, spec in datasets():
        ours, theirs = encodings(path, spec, template, light), encodings(path, spec, template, full)
        assert len(ours) == len(theirs) > 0
        for a, b in zip(ours, theirs):
            assert (a.input_ids, a.offsets, a.labels, a.text) == (b.input_ids, [tuple(o) for o in b.offsets],
                                                                 b.labels, b.text)
        compared += len(ours)
    assert compared >= 4 * ROWS
    assert light._full_tokenizer is None


def test_raw_texts_with_and_without_special_tokens_equal_transformers(pair):
    light, full = pair
    with open(shared_file("dialogsum.dev.jsonl"), encoding="utf-8") as lines:
        texts = [json.loads(line)["dialogue"] for line in islice(lines, ROWS)]
    with open(shared_file("financial_phrasebank.csv"), encoding="latin-1") as lines:
        texts += [line.split(",", 1)[1] for line in islice(lines, ROWS)]
    texts += ["", " ", "<|im_start|>user\nHi<|im_end|>\n", "  leading spaces", "tab\there", "émoji 🎉 ok"]
    for special in (True, False):
        a = light(texts, add_special_tokens=special, return_offsets_mapping=True)
        b = full(texts, add_special_tokens=special, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"]
        assert a["offset_mapping"] == [[tuple(o) for o in row] for row in b["offset_mapping"]]
    one = light(texts[0], return_offsets_mapping=True)
    assert one["input_ids"] == full(texts[0])["input_ids"] and one["offset_mapping"] == a["offset_mapping"][0]


def test_added_special_tokens_tokenize_as_in_transformers():
    light, full = load_tokenizer("smollm2-135m", light=True), load_tokenizer("smollm2-135m")
    new = ["<|turn|>", "[[END]]"]
    assert light.add_tokens(new, special_tokens=True) == full.add_tokens(new, special_tokens=True) == 2
    text = "A<|turn|>B [[END]] c<|turn|>\n[[END]]x"
    a, b = light(text, return_offsets_mapping=True), full(text, return_offsets_mapping=True)
    assert a["input_ids"] == b["input_ids"] and a["offset_mapping"] == [tuple(o) for o in b["offset_mapping"]]
    assert light.get_vocab() == full.get_vocab()


def test_validation_results_equal_with_either_tokenizer(pair):
    light, full = pair
    results = [validate_file(DEMO / "train.jsonl", spec=str(DEMO / "spec.yaml"), template=template, tokenizer=t).data
               for template in ("chatml", "alpaca") for t in (light, full)]
    for data in results:
        data.pop("timings", None)
    assert results[0] == results[1] and results[2] == results[3]


def test_folders_the_adapter_cannot_reproduce_load_transformers(tmp_path):
    source = resolve_model_path("smollm2-135m")
    assert plain_config(Path(source)) is not None
    for change in ({"add_bos_token": True}, {"tokenizer_class": "LlamaTokenizerFast"},
                   {"auto_map": {"AutoTokenizer": ["x.Tok", None]}}, {"bos_token": "<not-a-token>"},
                   {"add_prefix_space": True}):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config.update(change)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        assert plain_config(folder) is None, change
    folder = tmp_path / "no-json"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors", "tokenizer.json"))
    assert plain_config(folder) is None
    assert not isinstance(load_tokenizer(str(tmp_path / "0"), light=True), LightTokenizer)  # transformers'


def test_what_the_adapter_lacks_comes_from_transformers():
    light, full = load_tokenizer("smollm2-135m", light=True), load_tokenizer("smollm2-135m")
    turns = [{"role": "user", "content": "Hi"}]
    assert light.apply_chat_template(turns, tokenize=False) == full.apply_chat_template(turns, tokenize=False)
    assert light.decode([1, 200, 300, 2]) == full.decode([1, 200, 300, 2])


def test_validate_with_the_tokenizer_imports_no_torch(tmp_path):
    rows = tmp_path / "rows.jsonl"
    lines = (DEMO / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    rows.write_text("".join(lines[:100]), encoding="utf-8")
    probe = ("import runpy, sys\n"
             "sys.argv = ['sftkit', *sys.argv[1:]]\n"
             "code = 0\n"
             "try:\n    runpy.run_module('sftkit', run_name='__main__')\n"
             "except SystemExit as exit:\n    code = exit.code\n"
             "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules), code)\n")
    done = subprocess.run([sys.executable, "-c", probe, "validate", str(rows), "--spec", str(DEMO / "spec.yaml"),
                           "--template", "chatml", "--report-dir", str(tmp_path / "reports")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert "HEAVY [] 0" in done.stdout, done.stdout + done.stderr
    report = json.loads((tmp_path / "reports" / "validate.json").read_text())
    assert report["summary"]["rows"] == 100 and report["stats"]["tokenization"]  # the tokenizer checks ran
