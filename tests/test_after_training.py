"""A run's life after training: experiment trackers, the model card, `sftkit export`, `sftkit chat`."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
QA = DATA / "qa.jsonl"
SENTIMENT = DATA / "sentiment.jsonl"
SENTIMENT_EVAL = DATA / "sentiment_eval.jsonl"
SPEC = HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "SFTKIT_NO_PROGRESS": "1"}


def _err(result) -> str:
    return " ".join(result.stderr.split())


def _train(run_cli, out, *args):
    result = run_cli("train", "--model", "tiny-random", "--batch-size", "4", "--output-dir", out, "--no-validate", *args)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny-random LoRA run (alpaca, 12 steps at a high learning rate: its answers are words)."""
    from sftkit.testing import run_cli

    out = tmp_path_factory.mktemp("after") / "lora"
    return _train(run_cli, out, "--data", QA, "--max-steps", "12", "--lr", "0.02")


# -- trackers -----------------------------------------------------------------------------------------

def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard log folder, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_events_hold_the_logged_losses(tmp_path, run_cli):
    out = _train(run_cli, tmp_path / "tb", "--data", SENTIMENT, "--spec", SPEC, "--max-steps", "4", "--eval-data",
                 SENTIMENT_EVAL, "--eval-steps", "2", "--report-to", "tensorboard")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()]
    train_lines = [m for m in lines if "loss" in m]
    scalars = _scalars(out / "tensorboard")
    logged = scalars["train/loss"]
    assert [step for step, _ in logged] == [m["step"] for m in train_lines] == [1, 2, 3, 4]
    for (_, value), line in zip(logged, train_lines):  # events hold float32
        assert value == pytest.approx(line["loss"], rel=1e-6)
    assert [s for s, _ in scalars["train/learning_rate"]] == [1, 2, 3, 4]
    assert [v for _, v in scalars["train/learning_rate"]] == pytest.approx([m["lr"] for m in train_lines], rel=1e-6)
    assert [v for _, v in scalars["train/grad_norm"]] == pytest.approx([m["grad_norm"] for m in train_lines], rel=1e-5)
    assert [v for _, v in scalars["train/tokens_per_second"]] == pytest.approx(
        [m["tokens_per_s"] for m in train_lines], rel=1e-6)
    evals = [m for m in lines if "eval_loss" in m]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v in scalars["eval/loss"]] == \
        [(m["step"], m["eval_loss"]) for m in evals] and len(evals) == 2
    # The recipe is the run's configuration (accelerate also writes it as hparams.yml).
    stored = [yaml.safe_load(p.read_text("utf-8")) for p in (out / "tensorboard").rglob("hparams.yml")]
    assert stored and stored[0]["max_steps"] == 4 and stored[0]["report_to"] == '["tensorboard"]'


def test_resumed_run_purges_the_steps_it_redoes(tmp_path, run_cli):
    out = _train(run_cli, tmp_path / "tb-resume", "--data", QA, "--max-steps", "4", "--save-steps", "2",
                 "--save-total-limit", "3", "--report-to", "tensorboard")
    first = {s: v for s, v in _scalars(out / "tensorboard")["train/loss"]}
    result = run_cli("train", "--output-dir", out, "--resume", out / "checkpoints" / "checkpoint-2")
    assert result.exit_code == 0, result.stderr
    logged = _scalars(out / "tensorboard")["train/loss"]
    assert [s for s, _ in logged] == [1, 2, 3, 4]  # steps 3 and 4 once, from the resumed run
    assert [v for _, v in logged] == pytest.approx([first[s] for s in (1, 2, 3, 4)], rel=1e-5)


def test_a_missing_tracker_package_is_one_message_before_training(tmp_path, run_cli, monkeypatch):
    from sftkit.train import trackers

    monkeypatch.setitem(trackers.TRACKERS, "wandb", (("sftkit_test_no_such_module",), "wandb"))
    out = tmp_path / "never"
    result = run_cli("train", "--data", QA, "--model", "tiny-random", "--output-dir", out, "--report-to",
                     "tensorboard,wandb")
    assert result.exit_code == 2
    assert "the wandb tracker needs the 'wandb' package, which is not installed" in _err(result)
    assert "pip install wandb" in _err(result) and "Traceback" not in result.stderr
    assert not out.exists()  # nothing was read, loaded or written
    unknown = run_cli("train", "--data", QA, "--output-dir", out, "--report-to", "tensorbored")
    assert unknown.exit_code == 2 and "unknown tracker 'tensorbored'" in _err(unknown)
    assert "tensorboard" in _err(unknown)


# -- the model card -------------------------------------------------------------------------------------

def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


NASTY = "Say <script>alert(1)</script> *now* | [x](javascript:y) `tick` _u_"


def test_card_front_matter_parses_and_escapes_data_strings(tmp_path, run_cli):
    data = tmp_path / "we<i>rd*_|name.jsonl"
    data.write_text(SENTIMENT.read_text("utf-8"), "utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "nasty<b>", "format": "alpaca", "description": NASTY, "instruction": NASTY,
                                    "columns": {"input": "sentence", "output": "label", "instruction": None},
                                    "task": "classification", "labels": ["positive", "negative", "neutral"],
                                    "template": "alpaca"}), "utf-8")
    out = _train(run_cli, tmp_path / "card", "--data", data, "--spec", spec, "--max-steps", "2")
    card = (out / "README.md").read_text("utf-8")
    meta = _front_matter(card)
    assert meta["base_model"] == "tiny-random" and meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "text-generation" and "sftkit" in meta["tags"] and "lora" in meta["tags"]
    assert "license" not in meta  # tiny-random declares none: the card says so instead
    assert "License: not known to sftkit" in card
    assert "More Information Needed" not in card  # PEFT's template card is gone
    assert "<script>" not in card and "&lt;script&gt;" in card and "<b>" not in card and "<i>" not in card
    assert "[x](javascript" not in card and "\\[x\\]" in card and "\\*now\\*" in card
    summary = json.loads((out / "train.json").read_text("utf-8"))["summary"]
    assert f"Training loss {summary['first_loss']:.4f} at the first step, {summary['final_loss']:.4f} at the last" in card
    # Every table row has as many cells as its header: no data string splits a cell.
    for block in re.findall(r"(?:^\|.*\|\n)+", card, re.M):
        widths = {len(re.split(r"(?<!\\)\|", row)) for row in block.splitlines()}
        assert len(widths) == 1, block
    data_row = next(line for line in card.splitlines() if line.startswith("| <code>we&lt;i&gt;rd"))
    assert data_row.startswith("| <code>we&lt;i&gt;rd\\*\\_\\|name.jsonl</code> | 1.0 | 24 | 24 | 0 | 0 |")


def test_smollm2_card_declares_the_license_of_the_base(tmp_path):
    from sftkit.card import front_matter

    import gguf

    from sftkit.models import gguf_path

    meta = front_matter({"base_model": "smollm2-135m", "method": "full", "recipe": {}})
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and meta["library_name"] == "transformers"
    # The GGUF file the offline model is converted from declares the license and languages the card gives.
    fields = gguf.GGUFReader(str(gguf_path())).fields
    assert meta["license"] == fields["general.license"].contents() == "apache-2.0"
    assert meta["language"] == fields["general.languages"].contents() == ["en"]
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\nlanguage: fr\n---\n# a model\n", "utf-8")
    cached = {"base_model": str(folder), "method": "lora",
              "recipe": {"data": [{"path": "/h/hub/datasets--acme--tasks/snapshots/ab12/train.jsonl"}]}}
    meta = front_matter(cached)
    assert meta["license"] == "mit" and meta["language"] == ["fr"] and meta["datasets"] == ["acme/tasks"]


def test_eval_on_a_run_folder_puts_its_headline_into_the_card(tmp_path, run_cli):
    out = _train(run_cli, tmp_path / "evalcard", "--data", SENTIMENT, "--spec", SPEC, "--max-steps", "2")
    before = (out / "README.md").read_text("utf-8")
    assert "Not evaluated yet" in before
    result = run_cli("eval", "--model", out, "--data", SENTIMENT_EVAL, "--max-new-tokens", "4", "--report-dir",
                     tmp_path / "rep", "--json", tmp_path / "e.json", "--resamples", "200")
    assert result.exit_code == 0, result.stderr
    evaluation = json.loads((tmp_path / "e.json").read_text("utf-8"))
    card = (out / "README.md").read_text("utf-8")
    marker = "<!-- sftkit:evaluation -->"
    assert card.split(marker)[0] == before.split(marker)[0]  # only the evaluation section changed
    assert "Not evaluated yet" not in card
    assert "on <code>sentiment\\_eval.jsonl</code> (8 rows" in card
    for sub in evaluation["headline"]:
        entry = evaluation["metrics"][sub]
        tuned, base, diff = entry["tuned"], entry["base"], entry["difference"]
        row = next(line for line in card.splitlines() if line.startswith(f"| **{sub.replace('_', chr(92) + '_')}**"))
        assert f"{tuned['value']:.3f} [{tuned['low']:.3f}, {tuned['high']:.3f}]" in row
        assert f"{base['value']:.3f} [{base['low']:.3f}, {base['high']:.3f}]" in row
        assert f"{diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]" in row
    _front_matter(card)


# -- export ---------------------------------------------------------------------------------------------

PLAIN_TRANSFORMERS = r"""
import json, sys
sys.modules["sftkit"] = None  # importing sftkit anywhere below fails
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, messages, max_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
ids = tokenizer(prompt, return_tensors="pt").input_ids
new = model.generate(ids, max_new_tokens=max_new)[0, ids.shape[1]:].tolist()
last = model(ids).logits[0, -1]
probe = last[:256].tolist() + last[-3:].tolist()  # some base-vocabulary logits and the added tokens
stops = model.generation_config.eos_token_id
stops = stops if isinstance(stops, list) else [stops]
cut = next((i for i, token in enumerate(new) if token in stops), len(new))
print(json.dumps({"prompt": prompt, "ids": new[:cut], "vocab": len(tokenizer), "dtype": str(model.dtype),
                  "logits": probe, "sftkit": sys.modules.get("sftkit") is not None}))
"""


def _plain_generate(folder: Path, messages: list[dict], max_new: int) -> dict:
    done = subprocess.run([sys.executable, "-c", PLAIN_TRANSFORMERS, str(folder), json.dumps(messages), str(max_new)],
                          capture_output=True, text=True, env=OFFLINE, cwd=folder.parent, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sftkit_generate(run: Path, example, max_new: int):
    import torch

    from sftkit.generate import generate
    from sftkit.pipeline import Encoder, end_of_turn
    from sftkit.runs import load_for_inference

    model, tokenizer, info = load_for_inference(run)
    encoder = Encoder.build(template=info["template"]).with_tokenizer(tokenizer)
    prompt = encoder.prompt(example)
    generation = generate(model, tokenizer, [prompt], max_new_tokens=max_new, progress=False,
                          end_texts=[end_of_turn(encoder.segments(example))])[0]
    with torch.no_grad():
        last = model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1]
    return prompt, generation, len(tokenizer), last[:256].tolist() + last[-3:].tolist()


def test_exported_lora_run_loads_and_generates_like_the_run_without_sftkit(tmp_path, run_cli):
    from sftkit import Example
    from sftkit.runs import chat_messages

    run = _train(run_cli, tmp_path / "tokens", "--data", QA, "--template", "human_assistant", "--add-special-tokens",
                 "--max-steps", "4", "--lr", "0.01")
    result = run_cli("export", run, tmp_path / "exported")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "exported"
    assert {"README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "sftkit_run.json").exists() and not (out / "adapter_config.json").exists()
    meta = _front_matter((out / "README.md").read_text("utf-8"))
    assert meta["library_name"] == "transformers" and meta["base_model"] == "tiny-random"
    for example in (Example(instruction="Name the capital.", input="France"), Example(instruction="Reverse: stop")):
        prompt, generation, vocab, logits = _sftkit_generate(run, example, 12)
        plain = _plain_generate(out, chat_messages(example), 12)
        assert plain["sftkit"] is False
        assert plain["vocab"] == vocab == 49152 + 3  # the added tokens are kept
        assert plain["prompt"] == prompt  # the chat template is the training template
        assert plain["ids"] == list(generation.token_ids) and generation.tokens > 0
        assert plain["logits"] == pytest.approx(logits, abs=1e-4)


def test_export_dtype_and_a_full_run_exports_by_copying(tmp_path, run_cli, lora_run):
    from safetensors import safe_open

    result = run_cli("export", lora_run, tmp_path / "bf16", "--dtype", "bf16")
    assert result.exit_code == 0, result.stderr
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as handle:
        assert {str(handle.get_slice(name).get_dtype()) for name in handle.keys()} == {"BF16"}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text("utf-8"))["dtype"] == "bfloat16"

    full = _train(run_cli, tmp_path / "full", "--data", QA, "--full", "--max-steps", "1")
    result = run_cli("export", full, tmp_path / "full-out")
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "full-out"
    digest = [hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() for folder in (full, out)]
    assert digest[0] == digest[1]  # copied, not re-saved
    assert (out / "tokenizer.json").read_bytes() == (full / "tokenizer.json").read_bytes()
    assert not any((out / name).exists() for name in ("sftkit_run.json", "metrics.jsonl", "recipe.yaml", "train.json"))
    generation = json.loads((out / "generation_config.json").read_text("utf-8"))
    assert generation["eos_token_id"] == 2 and generation["do_sample"] is False and generation["max_new_tokens"] == 128

    again = run_cli("export", full, out)
    assert again.exit_code == 2 and "not an empty folder" in _err(again)
    assert run_cli("export", tmp_path / "nope", tmp_path / "x").exit_code == 2


# -- chat -----------------------------------------------------------------------------------------------

def test_chat_prompt_prints_what_eval_generates(tmp_path, run_cli, lora_run):
    instruction = "Name the capital of Italy."
    row = tmp_path / "one.jsonl"
    row.write_text(json.dumps({"instruction": instruction, "input": "", "output": "Rome"}) + "\n", "utf-8")
    evaluated = run_cli("eval", "--model", lora_run, "--data", row, "--no-compare", "--max-new-tokens", "10",
                        "--report-dir", tmp_path / "rep", "--json", tmp_path / "e.json")
    assert evaluated.exit_code == 0, evaluated.stderr
    expected = json.loads((tmp_path / "e.json").read_text("utf-8"))["examples"][0]["outputs"]["tuned"]["text"]
    assert expected.strip()  # a real answer, not an empty string
    chatted = run_cli("chat", lora_run, "--prompt", instruction, "--max-new-tokens", "10")
    assert chatted.exit_code == 0, chatted.stderr
    assert chatted.stdout.strip() == expected
    as_json = json.loads(run_cli("chat", lora_run, "--prompt", instruction, "--max-new-tokens", "10", "--json").stdout)
    assert as_json["answers"][0]["text"] == expected
    assert as_json["rendered_prompt"].endswith(f"### Instruction:\n{instruction}\n\n### Response:\n")


def test_chat_compare_shows_both_answers_side_by_side(tmp_path, run_cli, lora_run):
    result = run_cli("chat", lora_run, "--compare", "tiny-random", "--prompt", "Name a colour.", "--max-new-tokens",
                     "6", "--json")
    assert result.exit_code == 0, result.stderr
    answers = json.loads(result.stdout)["answers"]
    assert [a["model"] for a in answers] == [str(lora_run), "tiny-random"]
    assert answers[0]["text"] != answers[1]["text"]  # the tuned model answers otherwise than its base
    table = run_cli("chat", lora_run, "--compare", "tiny-random", "--prompt", "Name a colour.", "--max-new-tokens", "6")
    assert table.exit_code == 0 and "tiny-random" in table.stdout
    first_line = next(line for line in table.stdout.splitlines() if "tiny-random" in line)
    assert first_line.index("tiny-random") > len(first_line) // 2  # the second column, beside the first


def test_chat_interactive_answers_each_line_until_exit(lora_run, run_cli):
    from click.testing import CliRunner

    from sftkit.cli import cli

    once = run_cli("chat", lora_run, "--prompt", "Name the capital of Italy.", "--max-new-tokens", "10").stdout.strip()
    result = CliRunner().invoke(cli, ["chat", str(lora_run), "--max-new-tokens", "10"],
                                input="Name the capital of Italy.\n/reset\n\n/exit\nnever read\n")
    assert result.exit_code == 0, result.output
    flat = "".join(re.sub(r"[\u2500-\u257f]", " ", result.output).split())  # the table's box drawing removed
    assert once and "".join(once.split()) in flat  # the first turn equals the one-shot answer
    assert "new conversation" in result.output and result.output.count("you>") == 4  # stops at /exit


def test_chat_streams_the_growing_answer(tiny_model, tokenizer):
    from sftkit.chat import generate_one

    partial: list[str] = []
    generation = generate_one(tiny_model, tokenizer, "Name a colour.\n", [tokenizer.eos_token], 6,
                              on_text=partial.append)
    assert len(partial) == generation.tokens == 6  # one update per new token (none stopped it)
    assert partial[-1] == generation.text and all(b.startswith(a) for a, b in zip(partial, partial[1:]))


def test_chat_keeps_the_conversation_for_multi_turn_templates(tokenizer):
    from sftkit import Message
    from sftkit.chat import ChatSettings, example_for, renders_history
    from sftkit.pipeline import Encoder

    chatml = Encoder.build(template="chatml").with_tokenizer(tokenizer)
    assert renders_history(chatml)
    history = [Message("user", "What is 2+2?"), Message("assistant", "4")]
    prompt = chatml.prompt(example_for("And 3+3?", history, ChatSettings()))
    assert prompt == ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
                      "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n")
    custom = Encoder.build(template="custom").with_tokenizer(tokenizer)
    assert not renders_history(custom)  # renders only the last user turn
    constant = ChatSettings(instruction="Classify.", keep_history=False)
    example = example_for("Shares fell.", history, constant)
    assert (example.instruction, example.input, example.messages) == ("Classify.", "Shares fell.", None)


def test_chat_usage_errors_come_before_any_model_loads(run_cli):
    result = run_cli("chat", "tiny-random", "--prompt", "hi", "--template", "no_such_template")
    assert result.exit_code == 2 and "no_such_template" in _err(result) and "loading" not in result.stderr
    assert run_cli("chat", "tiny-random", "--json").exit_code == 2  # --json needs --prompt


# -- a quiet terminal -------------------------------------------------------------------------------------

FOREIGN = [re.compile(p) for p in (r"\d+%\|", r"it/s\]", r"Loading weights", r"Writing model shards",
                                   r"de-quantizing", r"FutureWarning", r"DeprecationWarning", r"UserWarning",
                                   r"warnings\.warn")]


def _sftkit(*args, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "sftkit", *map(str, args)], capture_output=True, text=True,
                          env=OFFLINE, cwd=cwd, timeout=900)
    assert done.returncode == 0, done.stderr
    return done


def test_quiet_libraries_and_verbose_undo_it():
    import warnings

    from transformers.utils import logging as hf_logging

    from sftkit.quiet import quiet_libraries

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_libraries()
            warnings.warn("a library deprecation", FutureWarning)
            warnings.warn("something to act on", UserWarning)
            assert [str(w.message) for w in caught] == ["something to act on"]
            assert not hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.ERROR
            assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
            quiet_libraries(verbose=True)
            warnings.warn("a library deprecation", FutureWarning)
            assert [str(w.message) for w in caught][-1] == "a library deprecation"
            assert hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.WARNING
    finally:
        quiet_libraries()  # as every CLI call in this process leaves it


@pytest.mark.slow
def test_preview_train_eval_export_chat_print_no_foreign_output(tmp_path):
    run, exported = tmp_path / "quiet", tmp_path / "quiet-export"
    outputs = {
        "preview": _sftkit("preview", QA, "--model", "tiny-random", "-n", "1", cwd=tmp_path),
        "train": _sftkit("train", "--data", QA, "--model", "tiny-random", "--max-steps", "2", "--batch-size", "4",
                         "--output-dir", run, cwd=tmp_path),
        "eval": _sftkit("eval", "--model", run, "--data", QA, "--max-new-tokens", "4", "--report-dir", tmp_path / "r",
                        cwd=tmp_path),
        "export": _sftkit("export", run, exported, cwd=tmp_path),
        "chat": _sftkit("chat", exported, "--prompt", "Name a colour.", "--max-new-tokens", "4", cwd=tmp_path),
    }
    for name, done in outputs.items():
        found = [p.pattern for p in FOREIGN if p.search(done.stderr)]
        assert not found, f"sftkit {name} printed other libraries' output {found}:\n{done.stderr}"
    assert "training tiny-random" in outputs["train"].stderr and "exported" in outputs["export"].stderr
    # Control: -v lets the libraries speak, so the patterns above do catch them.
    loud = _sftkit("-v", "chat", exported, "--prompt", "Name a colour.", "--max-new-tokens", "4", cwd=tmp_path)
    assert any(p.search(loud.stderr) for p in FOREIGN), loud.stderr
    loud_train = _sftkit("-v", "train", "--data", QA, "--model", "tiny-random", "--max-steps", "1", "--output-dir",
                         tmp_path / "loud", cwd=tmp_path)
    assert "FutureWarning" in loud_train.stderr, loud_train.stderr
