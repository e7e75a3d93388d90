"""Model families beyond Llama: the tiny T5 (encoder-decoder), OPT, GPT-2 and GPT-NeoX models
built offline from a config, trained (LoRA and full), resumed, evaluated, validated and
previewed like tiny-random."""
from __future__ import annotations

import pytest

from sftkit.models import TINY_GPT2, TINY_NEOX, TINY_OPT, TINY_T5

DECODERS = (TINY_OPT, TINY_GPT2, TINY_NEOX)


@pytest.mark.parametrize("name,architecture", [(TINY_T5, "T5ForConditionalGeneration"), (TINY_OPT, "OPTForCausalLM"),
                                               (TINY_GPT2, "GPT2LMHeadModel"), (TINY_NEOX, "GPTNeoXForCausalLM")])
def test_tiny_models_build_offline_with_the_tokenizer_vocabulary(name, architecture):
    import torch

    from sftkit.models import is_encoder_decoder, load_model, load_tokenizer

    tokenizer = load_tokenizer(name)
    model, again = load_model(name, tokenizer=tokenizer), load_model(name, tokenizer=tokenizer)
    assert type(model).__name__ == architecture
    assert model.get_input_embeddings().weight.shape[0] == tokenizer.vocab_size
    assert is_encoder_decoder(name) is (name == TINY_T5) is bool(model.config.is_encoder_decoder)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):  # seeded: the same weights
        assert torch.equal(a, b)


# -- decoder families: LoRA on every linear layer, packing only where examples stay apart --------------

@pytest.mark.parametrize("name,expected", [
    ("tiny-random", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    (TINY_OPT, {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}),
    (TINY_GPT2, {"c_attn", "c_proj", "c_fc"}),
    (TINY_NEOX, {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}),
    (TINY_T5, {"q", "k", "v", "o", "wi_0", "wi_1", "wo"}),
])
def test_default_lora_targets_every_linear_layer_but_the_head(name, expected):
    from sftkit.models import load_tokenizer
    from sftkit.recipe import build_recipe
    from sftkit.train.model import build_model

    recipe = build_recipe(None, {"data": ["x.jsonl"], "model": name})
    assert recipe.target_modules == ["all-linear"]
    tokenizer = load_tokenizer(name)
    model = build_model(recipe, tokenizer, [])
    adapted = {n.split(".")[-4] for n, _ in model.named_parameters() if n.endswith("lora_A.default.weight")}
    assert adapted == expected
    assert not any("lm_head" in n or "embed_out" in n for n, _ in model.named_parameters() if "lora_" in n)
    assert model.peft_config["default"].task_type == ("SEQ_2_SEQ_LM" if name == TINY_T5 else "CAUSAL_LM")


@pytest.mark.parametrize("name,embeddings", [(TINY_OPT, ["embed_tokens", "lm_head"]), (TINY_GPT2, ["wte", "lm_head"]),
                                             (TINY_NEOX, ["embed_in", "lm_head"]), (TINY_T5, ["shared", "lm_head"])])
def test_added_tokens_train_the_embeddings_by_their_own_names(name, embeddings):
    from sftkit.models import load_model
    from sftkit.train.model import embedding_names

    assert embedding_names(load_model(name)) == embeddings


@pytest.mark.parametrize("name", DECODERS)
def test_packed_cpu_kernel_is_used_by_decoder_families(name):
    from sftkit.models import load_model
    from sftkit.train.attention import use_kernel

    model = load_model(name)
    assert use_kernel(model, "sftkit") is None
    assert model.config._attn_implementation == "sftkit_packed"


def test_a_model_that_drops_the_example_bounds_is_never_packed():
    from sftkit.models import load_model
    from sftkit.train.attention import use_kernel

    model = load_model(TINY_GPT2)
    decoder = model.get_decoder()
    forward = decoder.forward
    decoder.forward = lambda *a, **k: forward(*a, **{x: v for x, v in k.items() if x != "sftkit_bounds"})
    reason = use_kernel(model, "sftkit")
    assert reason is not None and "does not keep packed examples apart" in reason
    assert model.config._attn_implementation != "sftkit_packed"  # switched back to its own attention


# -- encoder-decoder: the prompt is the encoder input, the response + end token the decoder target -----

import json  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DIALOGSUM = ROOT / "demo" / "dialogsum"  # the summarization demo's DialogSum subset
DEMO_RECIPE = ROOT / "demo" / "flan_t5_dialogsum" / "recipe.yaml"
SENTIMENT = ROOT / "tests" / "data" / "train" / "sentiment.jsonl"
SENTIMENT_EVAL = ROOT / "tests" / "data" / "train" / "sentiment_eval.jsonl"
SENTIMENT_SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"
PROMPT = "{instruction}\n\n{input}\n\nSummary:"  # the demo recipe's custom template
INSTRUCTION = "Summarize the following dialogue."  # the built-in dialogsum spec's constant instruction


def _records(path: Path, n: int) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()[:n]]


def _t5_prepared(**render):
    from sftkit.pipeline import DataRequest, RenderSettings, prepare

    settings = {"model": TINY_T5, "template": "custom", "template_options": {"prompt": PROMPT}, **render}
    return prepare(DataRequest(str(DIALOGSUM / "train.jsonl"), spec="dialogsum"), RenderSettings(**settings))


def test_encoder_decoder_trains_exactly_the_target_and_its_end_token():
    import numpy as np
    from itertools import islice

    from sftkit.models import load_tokenizer
    from sftkit.train.data import collate_seq2seq, to_sample

    prepared = _t5_prepared()
    examples = list(islice(prepared.examples(), 6))
    encoded = prepared.encoder.encode_many(examples)
    tokenizer = load_tokenizer(TINY_T5)  # a fresh one: computed independently of the encoder's
    for record, tok in zip(_records(DIALOGSUM / "train.jsonl", 6), encoded):
        target = tokenizer(record["summary"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        source = tokenizer(f"{INSTRUCTION}\n\n{record['dialogue']}\n\nSummary:", add_special_tokens=True)["input_ids"]
        assert tok.is_encoder_decoder and tok.source_length == len(source)
        assert tok.input_ids == source + target
        assert [label for label in tok.labels if label != -100] == target  # the trained tokens, exactly
        assert tok.labels[:len(source)] == [-100] * len(source)
        sample = to_sample(tok)
        assert sample.input_ids.tolist() == source and sample.target.tolist() == target
        assert sample.source.tolist() == list(range(len(target)))
    batch = collate_seq2seq([to_sample(t) for t in encoded[:2]], pad_id=tokenizer.pad_token_id, start_id=7)
    first = [t for t in encoded[0].input_ids[encoded[0].source_length:]]
    assert batch["decoder_input_ids"][0, :len(first)].tolist() == [7] + first[:-1]  # shifted right after the start
    assert batch["decoder_attention_mask"][0].sum() == len(first)
    assert batch["target"].tolist() == [t for tok in encoded[:2] for t in tok.input_ids[tok.source_length:]]
    widths = batch["decoder_input_ids"].shape[1]
    assert np.array_equal(batch["source"].numpy()[len(first):len(first) + 3], widths + np.arange(3))


def test_each_side_is_cut_at_its_own_limit():
    from itertools import islice

    from sftkit.models import load_tokenizer

    prepared = _t5_prepared(max_source_length=12, max_target_length=5)
    example = next(islice(prepared.examples(), 1))
    tok = prepared.encoder.encode(example)
    tokenizer = load_tokenizer(TINY_T5)
    record = _records(DIALOGSUM / "train.jsonl", 1)[0]
    target = tokenizer(record["summary"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    source = tokenizer(f"{INSTRUCTION}\n\n{record['dialogue']}\n\nSummary:", add_special_tokens=True)["input_ids"]
    assert tok.source_length == 12 and tok.input_ids == source[:12] + target[:5]
    assert tok.source_tokens_lost == len(source) - 12 and tok.trained_tokens_lost == len(target) - 5


@pytest.mark.parametrize("masking", ["full", "prompt_weighted"])
def test_masking_that_trains_the_prompt_is_refused_for_an_encoder_decoder(masking, run_cli, tmp_path):
    preview = run_cli("preview", DIALOGSUM / "train.jsonl", "--spec", "dialogsum", "--model", TINY_T5,
                      "--masking", masking)
    train = run_cli("train", DEMO_RECIPE, "--model", TINY_T5, "--masking", masking, "--max-steps", "1",
                    "--output-dir", tmp_path / "run")
    for result in (preview, train):
        err = " ".join(result.stderr.split())
        assert result.exit_code == 2, result.stderr
        assert f"masking '{masking}' trains prompt tokens" in err and "encoder-decoder" in err
        assert "completion_only" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "sftkit_run.json").exists()


def test_preview_shows_the_encoder_input_and_the_trained_decoder_target(run_cli):
    from sftkit.models import load_tokenizer

    result = run_cli("preview", DIALOGSUM / "train.jsonl", "--spec", "dialogsum", "--model", TINY_T5,
                     "--format", "json", "-n", "2", "--max-source-length", "40")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    tokenizer = load_tokenizer(TINY_T5)
    for record, item in zip(_records(DIALOGSUM / "train.jsonl", 2), data["examples"]):
        target = tokenizer(record["summary"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        encoder = [t for t in item["tokens"] if t["side"] == "encoder"]
        decoder = [t for t in item["tokens"] if t["side"] == "decoder"]
        assert item["encoder_tokens"] == len(encoder) == 40 and item["source_tokens_lost"] > 0
        assert [t["id"] for t in decoder] == target and all(t["trained"] for t in decoder)
        assert not any(t["trained"] for t in encoder) and item["trained"] == len(target)
        assert item["tokens"][:len(encoder)] == encoder  # the encoder side first
    plain = run_cli("preview", DIALOGSUM / "train.jsonl", "--spec", "dialogsum", "--model", TINY_T5,
                    "--format", "plain", "-n", "1")
    lines = plain.stdout.splitlines()
    assert plain.exit_code == 0 and lines[1] == "-- encoder input" and "-- decoder target" in lines
    after = lines[lines.index("-- decoder target") + 1:]
    assert after and all(line.startswith("T ") for line in after)  # every decoder token trains
    assert "encoder input" in lines[0] and "decoder target" in lines[0]


def test_validate_reports_a_cut_target_as_an_error_and_a_cut_source(run_cli, tmp_path):
    result = run_cli("validate", DIALOGSUM / "train.jsonl", "--spec", "dialogsum", "--model", TINY_T5,
                     "--max-source-length", "64", "--max-target-length", "8", "--report-dir", tmp_path,
                     "--json", tmp_path / "v.json")
    assert result.exit_code == 1, result.stderr
    issues = {i["code"]: i for i in json.loads((tmp_path / "v.json").read_text("utf-8"))["issues"]}
    assert issues["truncated_response"]["severity"] == "error"
    assert "max_target_length 8" in issues["truncated_response"]["message"]
    assert issues["truncated_source"]["severity"] == "warning"
    assert "max_source_length 64" in issues["truncated_source"]["message"]
    assert "template_not_prefix_preserving" not in issues and "eos_not_trained" not in issues
    # computed independently: the rows whose summary + EOS is longer than 8 tokens
    from sftkit.models import load_tokenizer

    tokenizer = load_tokenizer(TINY_T5)
    records = _records(DIALOGSUM / "train.jsonl", 10**6)
    long = [i for i, r in enumerate(records) if len(tokenizer(r["summary"], add_special_tokens=False)["input_ids"]) + 1 > 8]
    assert issues["truncated_response"]["rows"] == long
    fine = run_cli("validate", DIALOGSUM / "train.jsonl", "--spec", "dialogsum", "--model", TINY_T5,
                   "--max-source-length", "1024", "--max-target-length", "256", "--report-dir", tmp_path / "ok",
                   "--json", tmp_path / "ok.json")
    codes = {i["code"] for i in json.loads((tmp_path / "ok.json").read_text("utf-8"))["issues"]}
    assert fine.exit_code == 0, fine.stderr
    assert not codes & {"truncated_response", "truncated_source", "eos_not_trained", "no_trainable_tokens"}


@pytest.mark.parametrize("name", [TINY_OPT, TINY_GPT2])
def test_validate_and_preview_work_on_decoder_families(name, run_cli, tmp_path):
    from sftkit.models import load_tokenizer

    result = run_cli("preview", SENTIMENT, "--spec", SENTIMENT_SPEC, "--model", name, "--format", "json", "-n", "2")
    assert result.exit_code == 0, result.stderr
    tokenizer = load_tokenizer(name)
    for record, item in zip(_records(SENTIMENT, 2), json.loads(result.stdout)["examples"]):
        trained = [t["id"] for t in item["tokens"] if t["trained"]]
        assert trained == tokenizer(record["label"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert "side" not in item["tokens"][0]
    checked = run_cli("validate", SENTIMENT, "--spec", SENTIMENT_SPEC, "--model", name, "--report-dir", tmp_path,
                      "--json", tmp_path / "v.json")
    data = json.loads((tmp_path / "v.json").read_text("utf-8"))
    assert checked.exit_code == 0, checked.stderr
    assert data["stats"]["tokenization"]["rows"] == len(_records(SENTIMENT, 10**6))


# -- train, resume and evaluate each family (LoRA and full) --------------------------------------------

TRAIN_STEPS = 4
T5_ARGS = ["--max-source-length", "48", "--max-target-length", "24"]


def _train_args(name: str, method: str, out: Path) -> list:
    common = [f"--{method}", "--model", name, "--max-steps", str(TRAIN_STEPS), "--batch-size", "4", "--save-steps", "2",
              "--save-total-limit", "5", "--lr", "5e-3" if method == "lora" else "1e-3", "--no-validate",
              "--output-dir", out]
    if name == TINY_T5:  # the demo recipe, as a user runs it, with the tiny model
        return ["train", DEMO_RECIPE, *common, *T5_ARGS, "--eval-steps", "2"]
    return ["train", "--data", SENTIMENT, "--spec", SENTIMENT_SPEC, *common]


def _losses(out: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()]
    return {m["step"]: m["loss"] for m in lines if "loss" in m}


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    name = "adapter_model.safetensors" if (out / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(out / name))


def _one_at_a_time(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """The greedy output of ``model.generate`` for one prompt alone (no padding, no batching)."""
    import torch

    ids = tokenizer(prompt, add_special_tokens=True, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    new = output[0, 1:] if model.config.is_encoder_decoder else output[0, ids["input_ids"].shape[1]:]
    new = new.tolist()
    if tokenizer.eos_token_id in new:
        new = new[:new.index(tokenizer.eos_token_id)]
    return tokenizer.decode(new, skip_special_tokens=True).strip()


SLOW = pytest.mark.slow  # the T5 runs encode 300 dialogues and score ROUGE: about 10-30 s each on 2 busy cores


@pytest.mark.parametrize("name,method", [pytest.param(TINY_T5, "lora", marks=SLOW), pytest.param(TINY_T5, "full", marks=SLOW),
                                         (TINY_OPT, "lora"), (TINY_OPT, "full"), (TINY_GPT2, "lora"),
                                         (TINY_GPT2, "full"), (TINY_NEOX, "lora"), (TINY_NEOX, "full")])
def test_train_resume_and_evaluate(name, method, run_cli, tmp_path):
    import shutil

    import torch

    from sftkit.runs import load_for_inference, read_run

    ref = tmp_path / "ref"
    result = run_cli(*_train_args(name, method, ref))
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    if name == TINY_T5:
        assert "batches padded per side (encoder-decoder)" in err and err.count("never packed") == 1
    else:
        assert "padding-free packing (sftkit attention)" in err
    losses = _losses(ref)
    assert sorted(losses) == list(range(1, TRAIN_STEPS + 1)) and losses[TRAIN_STEPS] < losses[1]
    assert read_run(ref)["method"] == method

    resumed = tmp_path / "resumed"
    shutil.copytree(ref / "checkpoints" / "checkpoint-2", resumed / "checkpoints" / "checkpoint-2")
    result = run_cli(*_train_args(name, method, resumed), "--resume")
    assert result.exit_code == 0, result.stderr
    assert f"at step 2 of {TRAIN_STEPS}" in " ".join(result.stderr.split())
    again = _losses(resumed)
    assert sorted(again) == [3, 4] and all(abs(again[s] - losses[s]) <= 1e-5 for s in again)
    a, b = _weights(resumed), _weights(ref)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)

    data = (DIALOGSUM / "test.jsonl", "dialogsum") if name == TINY_T5 else (SENTIMENT_EVAL, SENTIMENT_SPEC)
    report = tmp_path / "eval"
    result = run_cli("eval", "--model", resumed, "--data", data[0], "--spec", data[1], "--no-compare", "--limit", "5",
                     "--max-new-tokens", "6", "--batch-size", "4", "--report-dir", report, "--resamples", "100")
    assert result.exit_code == 0, result.stderr
    evaluation = json.loads((report / "eval.json").read_text("utf-8"))
    examples = evaluation["examples"]
    assert evaluation["generation"]["padding"] == ("right" if name == TINY_T5 else "left")
    model, tokenizer, info = load_for_inference(resumed)
    assert info["method"] == method and bool(model.config.is_encoder_decoder) is (name == TINY_T5)
    for item in examples:
        assert item["outputs"]["tuned"]["text"] == _one_at_a_time(model, tokenizer, item["prompt"], 6)
    assert any(item["outputs"]["tuned"]["text"] for item in examples)  # not all empty: the comparison says something
    if name == TINY_T5:
        assert examples[0]["prompt"].startswith(INSTRUCTION) and examples[0]["prompt"].endswith("Summary:")

    # exported: a plain transformers folder that the matching Auto class loads, generating the same
    import transformers

    exported = tmp_path / "exported"
    assert run_cli("export", resumed, exported).exit_code == 0
    auto = transformers.AutoModelForSeq2SeqLM if name == TINY_T5 else transformers.AutoModelForCausalLM
    plain = auto.from_pretrained(str(exported)).eval()
    card = (exported / "README.md").read_text("utf-8")
    assert f"{auto.__name__}.from_pretrained(folder)" in card
    first = examples[0]
    assert _one_at_a_time(plain, tokenizer, first["prompt"], 6) == first["outputs"]["tuned"]["text"]

    # chat: the answer to a prompt, rendered with the run's template, is the model's one-at-a-time output
    question = "Summarize: #Person1#: Is the shop open? #Person2#: Until nine." if name == TINY_T5 else "Name a colour."
    chatted = run_cli("chat", resumed, "--prompt", question, "--max-new-tokens", "6", "--json")
    assert chatted.exit_code == 0, chatted.stderr
    answer = json.loads(chatted.stdout)
    assert answer["answers"][0]["text"] == _one_at_a_time(model, tokenizer, answer["rendered_prompt"], 6)
