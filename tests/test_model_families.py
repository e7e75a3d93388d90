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
