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
