"""`sftkit train`: recipes, what the trainer feeds the model, the loss, and a tiny end-to-end run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sftkit.errors import SftkitError
from sftkit.recipe import build_recipe, closest_key
from sftkit.tokenize import IGNORE_INDEX
from sftkit.train.data import Schedule, Source, collate, epoch_order, split_by_tokens

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
ROOT = HERE.parent
SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"
SENTIMENT = DATA / "sentiment.jsonl"
QA = DATA / "qa.jsonl"


def _err(result) -> str:
    """stderr with Rich's line wrapping undone."""
    return " ".join(result.stderr.split())


def _recipe(**extra):
    settings = {"data": [str(SENTIMENT)], "spec": str(SPEC), "model": "tiny-random", "batch_size": 4}
    settings.update(extra)
    return build_recipe(None, settings)


# -- recipes ------------------------------------------------------------------------------------

def test_recipe_unknown_key_names_closest(tmp_path, run_cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: [{SENTIMENT}]\nlora_rank: 8\n", "utf-8")
    result = run_cli("train", recipe)
    assert result.exit_code == 2
    assert "unknown recipe key 'lora_rank'" in _err(result) and "did you mean 'lora_r'" in _err(result)
    assert "Traceback" not in result.stderr
    assert closest_key("batchsize") == "batch_size" and closest_key("zzzz") is None


@pytest.mark.parametrize("line, message", [
    ("batch_size: eight", "batch_size must be an integer"),
    ("lr: [1]", "lr must be a number"),
    ("packing: 'yes'", "packing must be true or false"),
    ("method: qlora", "method must be one of lora, full"),
    ("batch_size: 0", "batch_size must be at least 1"),
    ("epochs: 0", "epochs must be more than 0, got 0"),
    ("warmup_ratio: 5", "warmup_ratio must be at most 1, got 5"),
    ("lora_dropout: 1.0", "lora_dropout must be less than 1, got 1.0"),
    ("seed: 4294967296", "seed must be at most 4294967295, got 4294967296"),
    ("target_modules: []", "target_modules must be a non-empty list of non-empty text, got []"),
    ("lr: .nan", "lr must be a number more than 0 and at most 1 (or null), got nan"),
    ("weight_decay: -.inf", "weight_decay must be a number of at least 0, got -inf"),
    ("max_steps: 1000000000", "max_steps must be at most 100000000"),
    ("data: ['a.jsonl:inf']", "data weight of a.jsonl must be a number more than 0 and at most 10000"),
    ("packing: 1", "packing must be true or false, got 1"),
    ("a: &x [1]\nb: *x", "aliases"),
    ("- just\n- a list", "must be a mapping"),
])
def test_recipe_bad_values_exit_2(tmp_path, run_cli, line, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"{line}\n", "utf-8")
    result = run_cli("train", recipe, "--data", SENTIMENT)
    assert result.exit_code == 2, result.stderr
    assert message in _err(result)
    assert "Traceback" not in result.stderr


def test_flags_override_recipe_and_paths_resolve_from_recipe(tmp_path):
    (tmp_path / "d.jsonl").write_text(SENTIMENT.read_text("utf-8"), "utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: ['d.jsonl:2']\nlr: 0.001\nbatch_size: 2\nmethod: full\n", "utf-8")
    built = build_recipe(recipe, {"lr": 0.01})
    assert built.lr == 0.01 and built.batch_size == 2 and built.method == "full"
    assert built.data[0].path == str(tmp_path / "d.jsonl") and built.data[0].weight == 2.0
    assert build_recipe(None, {"data": [str(SENTIMENT)]}).learning_rate() == 2e-4
    assert build_recipe(None, {"data": [str(SENTIMENT)], "method": "full"}).learning_rate() == 2e-5
    with pytest.raises(SftkitError, match="no training data"):
        build_recipe(None, {})


# -- data order and mixing -----------------------------------------------------------------------

def test_epoch_order_mixes_by_weight_with_a_seed():
    sources = [Source("a", list(range(10)), 1.0), Source("b", list(range(4)), 2.0), Source("c", list(range(6)), 0.5)]
    order = epoch_order(sources, seed=1, epoch=0)
    counts = np.bincount([s for s, _ in order], minlength=3)
    assert counts.tolist() == [10, 8, 3]
    b_items = sorted(i for s, i in order if s == 1)
    assert b_items == [0, 0, 1, 1, 2, 2, 3, 3]  # weight 2: every example twice
    assert len({i for s, i in order if s == 0}) == 10  # weight 1: each once
    assert order == epoch_order(sources, seed=1, epoch=0)
    assert order != epoch_order(sources, seed=2, epoch=0)
    assert order != epoch_order(sources, seed=1, epoch=1)


def test_schedule_splits_steps_across_ranks_and_accumulation():
    sources = [Source("a", [f"x{i}" for i in range(20)])]
    one = Schedule(sources, batch_size=2, grad_accum=2, world=1, seed=3)
    two = [Schedule(sources, batch_size=2, grad_accum=1, world=2, seed=3) for _ in range(2)]
    for step in range(6):  # crosses the epoch boundary
        single = [x for m in one.micro_batches(step) for x in m]
        split = [x for rank in range(2) for x in two[rank].micro_batches(step, rank)[0]]
        assert len(single) == 4 and sorted(single) == sorted(split)
    assert one.steps_for(1.0) == 5 and one.epoch_at(5) == 1.0


# -- what the trainer feeds the model --------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded():
    from sftkit.train.sources import load_training_data

    recipe = _recipe(data=[{"path": str(SENTIMENT), "spec": str(SPEC)}, str(QA)], spec=None, template="alpaca")
    return recipe, load_training_data(recipe, validate=False)


def _labels_from_batch(batch, lengths):
    """Rebuild per-example label rows (-100 where not trained) from a collated batch."""
    flat = np.full(sum(lengths) if batch["position_ids"] is not None else batch["input_ids"].numel(), IGNORE_INDEX)
    flat[batch["source"].numpy() + 1] = batch["target"].numpy()
    return flat


@pytest.mark.parametrize("packed", [True, False])
def test_trainer_batch_labels_equal_encoder_labels(loaded, packed):
    from conftest import prepared_for

    recipe, data = loaded
    schedule = Schedule(data.sources, batch_size=5, seed=0)
    samples = schedule.micro_batches(0)[0]
    batch = collate(samples, packed=packed, pad_id=0)
    # The same examples, encoded independently by the pipeline that preview uses.
    expected = {}
    for source in recipe.data:
        prepared = prepared_for(source.path, spec=source.spec, template="alpaca", model="tiny-random",
                                max_length=recipe.max_length)
        for tok in prepared.encoder.encode_many(prepared.examples()):
            expected[tuple(tok.input_ids)] = tok.labels
    lengths = [s.length for s in samples]
    flat = _labels_from_batch(batch, lengths)
    ids = batch["input_ids"].numpy()
    if packed:
        assert ids.shape[0] == 1 and batch["attention_mask"] is None
        starts = np.cumsum([0] + lengths)
        rows = [(ids[0, a:b], flat[a:b]) for a, b in zip(starts[:-1], starts[1:])]
        assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    else:
        width = ids.shape[1]
        rows = [(ids[r, :n], flat[r * width:r * width + n]) for r, n in enumerate(lengths)]
        assert (batch["attention_mask"].sum(1).tolist()) == lengths
    for row_ids, row_labels in rows:
        labels = expected[tuple(row_ids.tolist())]
        assert row_labels[1:].tolist() == labels[1:]  # position 0 has no context and never trains
        assert any(v != IGNORE_INDEX for v in labels) and any(v == IGNORE_INDEX for v in labels)


def test_packed_loss_has_no_attention_across_examples(loaded, tiny_model):
    """Each example's loss in a packed row equals its loss alone: attention stays inside examples."""
    import torch

    from sftkit.train.attention import use_packed_attention
    from sftkit.train.loss import batch_inputs, make_loss_module

    _, data = loaded
    samples = Schedule(data.sources, batch_size=4, seed=0).micro_batches(0)[0]
    tiny_model.config.use_cache = False
    module = make_loss_module(tiny_model)
    with torch.no_grad():
        alone = [module(**batch_inputs(collate([s], packed=False, pad_id=0), "cpu"))[0] for s in samples]
        padded = module(**batch_inputs(collate(samples, packed=False, pad_id=0), "cpu"))[0]
        builtin = module(**{**batch_inputs(collate(samples, packed=True, pad_id=0), "cpu"), "bounds": None})[0]
        assert use_packed_attention(tiny_model)
        packed = module(**batch_inputs(collate(samples, packed=True, pad_id=0), "cpu"))[0]
        # Control: the same packed row with no position ids lets examples attend to each other.
        leaky = module(**{**batch_inputs(collate(samples, packed=True, pad_id=0), "cpu"), "bounds": None,
                          "position_ids": None})[0]
    total = torch.stack(alone).sum()
    torch.testing.assert_close(packed, total, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(builtin, total, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(padded, total, rtol=1e-5, atol=1e-4)
    assert abs(float(leaky - total)) > 1e-3


def test_loss_on_trained_positions_equals_full_logits_loss(loaded, tiny_model):
    """Gathering trained positions before the LM head gives the usual masked mean cross-entropy."""
    import torch

    from sftkit.train.loss import batch_inputs, make_loss_module

    _, data = loaded
    samples = Schedule(data.sources, batch_size=3, seed=0).micro_batches(0)[0]
    batch = collate(samples, packed=False, pad_id=0)
    labels = torch.full(batch["input_ids"].shape, IGNORE_INDEX).flatten()
    labels[batch["source"] + 1] = batch["target"]
    labels = labels.view(batch["input_ids"].shape)
    with torch.no_grad():
        loss_sum, weight_sum = make_loss_module(tiny_model)(**batch_inputs(batch, "cpu"))
        reference = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    torch.testing.assert_close(loss_sum / weight_sum, reference, rtol=1e-5, atol=1e-5)


def test_forward_passes_split_by_token_budget_give_the_same_gradients(loaded, tiny_model):
    import torch

    from sftkit.train.loss import batch_inputs, make_loss_module

    _, data = loaded
    samples = Schedule(data.sources, batch_size=6, seed=0).micro_batches(0)[0]
    budget = 2 * max(s.length for s in samples)
    groups = split_by_tokens(samples, budget)
    assert len(groups) > 1 and [s for g in groups for s in g] == samples
    assert all(sum(s.length for s in g) <= budget for g in groups)
    assert split_by_tokens(samples, None) == [samples] and split_by_tokens(samples, 1) == [[s] for s in samples]
    module = make_loss_module(tiny_model)
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    total = float(sum(s.weight.sum() for s in samples))
    grads = []
    for parts in ([samples], groups):
        for part in parts:
            loss_sum, _ = module(**batch_inputs(collate(part, packed=True, pad_id=0), "cpu"))
            (loss_sum / total).backward()
        grads.append([p.grad.clone() for p in params])
        tiny_model.zero_grad(set_to_none=True)
    for one, split in zip(*grads):
        torch.testing.assert_close(split, one, rtol=1e-4, atol=1e-6)


def test_prompt_weighted_trains_prompt_tokens_with_small_weights(tiny_model):
    import torch

    from sftkit.train.loss import batch_inputs, make_loss_module
    from sftkit.train.sources import load_training_data

    data = load_training_data(_recipe(masking="prompt_weighted", masking_options={"prompt_weight": 0.25}),
                              validate=False)
    sample = data.sources[0].samples[0]
    assert sorted(set(sample.weight.tolist())) == [0.25, 1.0]
    batch = collate([sample], packed=True, pad_id=0)
    with torch.no_grad():
        loss_sum, weight_sum = make_loss_module(tiny_model)(**batch_inputs(batch, "cpu"))
        logits = tiny_model(input_ids=batch["input_ids"]).logits[0]
    per_token = torch.nn.functional.cross_entropy(logits[batch["source"]], batch["target"], reduction="none")
    expected = (per_token * batch["weight"]).sum() / batch["weight"].sum()
    torch.testing.assert_close(loss_sum / weight_sum, expected, rtol=1e-5, atol=1e-5)
    assert float(weight_sum) == pytest.approx(float(batch["weight"].sum()))


# -- end to end ------------------------------------------------------------------------------------

def test_train_tiny_lora_run_folder_complete(tmp_path, run_cli):
    import torch

    from sftkit.models import load_model
    from conftest import prepared_for
    from sftkit.runs import chat_messages, load_for_inference, read_run

    out = tmp_path / "run"
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"data:\n  - {{path: {SENTIMENT}, spec: {SPEC}}}\n  - {{path: {QA}, weight: 2}}\n"
                      f"template: alpaca\nmodel: tiny-random\nbatch_size: 4\nlr: 0.005\n", "utf-8")
    result = run_cli("train", recipe, "--max-steps", "6", "--eval-data", DATA / "sentiment_eval.jsonl",
                     "--spec", SPEC, "--eval-steps", "3", "--save-steps", "2", "--save-total-limit", "2",
                     "--output-dir", out, "--no-validate")
    assert result.exit_code == 0, result.stderr
    for name in ("sftkit_run.json", "adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json",
                 "recipe.yaml", "metrics.jsonl", "train.html", "train.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    info = read_run(out)
    assert info["method"] == "lora" and info["template"] == "alpaca" and info["base_model"] == "tiny-random"
    assert [d["weight"] for d in info["recipe"]["data"]] == [1.0, 2.0]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()]
    train_lines = [m for m in lines if "loss" in m]
    assert [m["step"] for m in train_lines] == [1, 2, 3, 4, 5, 6]
    assert [m["step"] for m in lines if "eval_loss" in m] == [3, 6]
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]  # lr 5e-3 on a tiny model: the loss falls
    assert all(m["trained_tokens"] > 0 and m["tokens"] > m["trained_tokens"] for m in train_lines)
    # The adapter changed the model, and the tokenizer carries the training template.
    model, tokenizer, loaded_info = load_for_inference(out)
    assert loaded_info["method"] == "lora"
    prepared = prepared_for(QA, template="alpaca", model="tiny-random")
    example = next(prepared.examples())
    assert example.input  # the Alpaca form with an ### Input: section
    assert tokenizer.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True) == \
        prepared.encoder.prompt(example)
    ids = torch.tensor([tokenizer(prepared.encoder.prompt(example))["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, load_model("tiny-random")(input_ids=ids).logits,
                                  atol=1e-4)
    report = (out / "train.html").read_text("utf-8")
    assert "Loss" in report and "trained tokens/s" in report and "qa.jsonl" in report
    assert "<script>alert" not in report


def test_train_full_with_added_tokens(tmp_path, run_cli):
    from sftkit.runs import load_for_inference

    out = tmp_path / "full"
    result = run_cli("train", "--data", QA, "--template", "simple", "--add-special-tokens", "--full",
                     "--model", "tiny-random", "--max-steps", "2", "--batch-size", "4", "--output-dir", out,
                     "--no-validate")
    assert result.exit_code == 0, result.stderr
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    model, tokenizer, info = load_for_inference(out)
    assert info["method"] == "full" and info["added_tokens"] == ["###instruction###", "###response###", "###system###"]
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("###response###") >= 49152


def test_lora_with_added_tokens_saves_embeddings(tmp_path, run_cli):
    import torch

    from sftkit.runs import load_for_inference

    out = tmp_path / "lora-tokens"
    result = run_cli("train", "--data", QA, "--template", "human_assistant", "--add-special-tokens", "--model", "tiny-random",
                     "--max-steps", "2", "--batch-size", "4", "--lr", "1e-2", "--output-dir", out, "--no-validate")
    assert result.exit_code == 0, result.stderr
    from safetensors.torch import load_file

    saved = load_file(str(out / "adapter_model.safetensors"))
    assert any("embed_tokens" in k for k in saved)
    model, tokenizer, info = load_for_inference(out)
    assert info["added_tokens"] == ["###human###", "###assistant###", "###system###"]
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == len(tokenizer) == 49152 + 3
    # The trained embedding copy is tied to the LM head (SmolLM2 ties them), and the new rows trained.
    assert torch.equal(rows, model.get_output_embeddings().weight)
    embed_key = next(k for k in saved if "embed_tokens" in k)
    assert saved[embed_key].shape[0] == len(tokenizer)


def test_existing_run_needs_resume_or_overwrite(tmp_path, run_cli):
    out = tmp_path / "again"
    args = ["train", "--data", QA, "--model", "tiny-random", "--max-steps", "1", "--output-dir", out, "--no-validate"]
    assert run_cli(*args).exit_code == 0
    second = run_cli(*args)
    assert second.exit_code == 2 and "already holds a run" in _err(second)
    assert run_cli(*args, "--overwrite").exit_code == 0


def test_bad_target_module_is_a_usage_error(tmp_path, run_cli):
    result = run_cli("train", "--data", QA, "--model", "tiny-random", "--target-modules", "q_proj,qkv",
                     "--output-dir", tmp_path / "x", "--no-validate")
    assert result.exit_code == 2 and "qkv" in _err(result) and "gate_proj" in _err(result)


def test_validation_errors_abort_with_the_report_path(tmp_path, run_cli):
    out = tmp_path / "invalid"
    result = run_cli("train", "--data", DATA / "sentiment_conflict.jsonl", "--spec", SPEC, "--model", "tiny-random",
                     "--max-steps", "1", "--output-dir", out)
    assert result.exit_code == 1, result.stderr
    err = _err(result)
    assert "validation found 1 error(s); training did not start" in err
    assert str(out / "validate.html") in "".join(result.stderr.split())  # Rich may wrap the path
    assert (out / "validate.html").is_file()
    assert not (out / "sftkit_run.json").exists() and not (out / "metrics.jsonl").exists()


def test_early_stopping_when_the_eval_loss_stops_improving(tmp_path, run_cli):
    out = tmp_path / "early"
    # lr 1e-30 (a learning rate must be more than 0): each update is below the float32 resolution of the
    # weights, so they never change, the eval loss never improves, and patience 2 stops at step 3 of 10.
    result = run_cli("train", "--data", SENTIMENT, "--spec", SPEC, "--model", "tiny-random", "--max-steps", "10",
                     "--batch-size", "4", "--lr", "1e-30", "--scheduler", "constant", "--eval-data",
                     DATA / "sentiment_eval.jsonl", "--eval-steps", "1", "--early-stopping-patience", "2",
                     "--output-dir", out, "--no-validate")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((out / "train.json").read_text("utf-8"))["summary"]
    assert summary["stopped_early"] is True and summary["steps"] == 3 and summary["planned_steps"] == 10
    evals = [json.loads(line)["eval_loss"] for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()
             if "eval_loss" in line]
    assert len(evals) == 3 and max(evals) - min(evals) < 1e-6
