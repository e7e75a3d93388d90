"""The run-folder contract (sftkit.runs) and the templates' Jinja forms for saved tokenizers."""
from __future__ import annotations

import json

import pytest

from sftkit import Example, Message
from sftkit.errors import SftkitError
from sftkit.pipeline import Encoder
from sftkit.runs import RUN_FILE, chat_messages, is_run_dir, load_for_inference, read_run, write_run

EXAMPLES = [
    Example(instruction="Name a colour.", output="Blue."),
    Example(instruction="Say hi", system="You are terse.", output="hi"),
    Example(instruction="Classify.", input="Shares fell 5 % .", output="negative"),
    Example(instruction="", input="Only an input", output="ok"),
    Example(messages=[Message("user", "2+2?"), Message("assistant", "4"), Message("user", "and 3+3?"),
                      Message("assistant", "6")]),
    Example(messages=[Message("system", "Be kind."), Message("user", "Hello <b>&"), Message("assistant", "Hi {{ x }}")]),
]


@pytest.mark.parametrize("name", ["alpaca", "simple", "human_assistant", "chatml", "plain"])
def test_jinja_generation_prompt_equals_encoder_prompt(name, fresh_tokenizer):
    encoder = Encoder.build(template=name, tokenizer=fresh_tokenizer)
    fresh_tokenizer.chat_template = encoder.template.jinja
    for example in EXAMPLES:
        prompt_turns = chat_messages(example)  # the final assistant message is what the model writes
        rendered = fresh_tokenizer.apply_chat_template(prompt_turns, tokenize=False, add_generation_prompt=True)
        assert rendered == encoder.prompt(example), (name, example)
        full = fresh_tokenizer.apply_chat_template(chat_messages(example, include_response=True), tokenize=False)
        assert full == "".join(s.text for s in encoder.segments(example)), (name, example)


def _tiny_lora_run(folder, tokenizer, added=()):
    import torch
    from peft import LoraConfig, get_peft_model

    from sftkit.models import load_model

    model = load_model("tiny-random")
    if added:
        tokenizer.add_tokens(list(added), special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))
    # As sftkit train does (sftkit.train.model.build_model): with added tokens both the embeddings and
    # the (tied) output layer are saved, so the loaded model does not depend on how resizing fills
    # the new rows (mean resizing samples them at random: saving only embed_tokens made this flaky).
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                        modules_to_save=["embed_tokens", "lm_head"] if added else None,
                        ensure_weight_tying=bool(added))
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_run(folder, {"sftkit_version": "test", "base_model": "tiny-random", "method": "lora", "template": "alpaca",
                       "template_options": {}, "masking": "completion_only", "masking_options": {}, "spec": {},
                       "max_length": None, "added_tokens": list(added), "recipe": {}})
    return peft_model


def test_lora_run_loads_with_same_outputs(tmp_path, fresh_tokenizer):
    import torch

    peft_model = _tiny_lora_run(tmp_path, fresh_tokenizer, added=("###response###",))
    assert is_run_dir(tmp_path) and not is_run_dir(tmp_path / "nope")
    assert read_run(tmp_path)["method"] == "lora"
    model, tokenizer, info = load_for_inference(tmp_path)
    assert info["base_model"] == "tiny-random" and info["added_tokens"] == ["###response###"]
    assert len(tokenizer) == len(fresh_tokenizer)
    ids = torch.tensor([tokenizer("hello ###response### there")["input_ids"]])
    assert ids.max().item() >= len(tokenizer) - 1  # the added token is used
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The adapter changed the model: the base alone gives other logits.
    base, _, none = load_for_inference("tiny-random")
    assert none is None
    base.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, got, atol=1e-3)


def test_run_dir_refuses_pickled_adapter_and_bad_json(tmp_path, fresh_tokenizer):
    _tiny_lora_run(tmp_path, fresh_tokenizer)
    (tmp_path / "adapter_model.safetensors").rename(tmp_path / "adapter_model.bin")
    with pytest.raises(SftkitError, match="safetensors"):
        load_for_inference(tmp_path)
    (tmp_path / RUN_FILE).write_text("{not json", "utf-8")
    with pytest.raises(SftkitError, match="unreadable run description"):
        read_run(tmp_path)
    (tmp_path / RUN_FILE).write_text(json.dumps({"base_model": "x", "method": "qlora"}), "utf-8")
    with pytest.raises(SftkitError, match="unknown method"):
        read_run(tmp_path)
