"""Render -> mask -> tokenize: templates, masking strategies, truncation, special tokens."""
from __future__ import annotations

import pytest

from sftkit import Example, Message, Segment
from sftkit.errors import UsageError
from sftkit.models import load_model
from sftkit.pipeline import Encoder, add_template_tokens, end_of_turn, generation_prompt, split_markers
from sftkit.registry import get_registry

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5<|im_end|>"
)


def example():
    return Example(instruction="Add the numbers.", input="2 and 3", output="5")


def conversation():
    return Example(messages=[Message("user", "Hi"), Message("assistant", "Hello!"),
                             Message("user", "2+2?"), Message("assistant", "4")])


def test_alpaca_renders_the_stanford_format(tokenizer):
    encoder = Encoder.build(template="alpaca", tokenizer=tokenizer)
    assert "".join(s.text for s in encoder.segments(example())) == ALPACA_WITH_INPUT
    no_input = Example(instruction="Say hi.", output="Hi")
    text = "".join(s.text for s in encoder.segments(no_input))
    assert text.startswith("Below is an instruction that describes a task. Write a response")
    assert "### Input:" not in text


def test_generation_prompt_is_the_training_render_minus_the_response(tokenizer):
    encoder = Encoder.build(template="alpaca", tokenizer=tokenizer)
    segments = encoder.segments(example())
    assert generation_prompt(segments) + "5" + end_of_turn(segments) == ALPACA_WITH_INPUT
    assert encoder.prompt(example()).endswith("### Response:\n")


def _trained_text(encoder, ex, tokenizer):
    tok = encoder.encode(ex)
    return tokenizer.decode([t for t, label in zip(tok.input_ids, tok.labels) if label != -100])


def test_conversation_masking_strategies_differ_as_documented(tokenizer):
    ex = conversation()
    trained = {m: _trained_text(Encoder.build(template="chatml", masking=m, tokenizer=tokenizer), ex, tokenizer)
               for m in ("completion_only", "assistant_only", "last_turn", "full")}
    assert trained["completion_only"] == "4<|im_end|>"
    assert trained["assistant_only"] == "Hello!<|im_end|>4<|im_end|>"
    assert trained["last_turn"] == "<|im_start|>assistant\n4<|im_end|>\n"
    full_text = "".join(s.text for s in Encoder.build(template="chatml", tokenizer=tokenizer).segments(ex))
    assert trained["full"] == full_text


def test_a_token_straddling_the_marker_boundary_trains_with_the_response(tokenizer):
    # The marker ends in a space; " Paris" is one token that starts in the marker.
    segments = [Segment("Q: capital of France? A:", "user", "marker", 0), Segment(" ", "assistant", "marker", 1),
                Segment("Paris", "assistant", "content", 1), Segment("<|im_end|>", "assistant", "end", 1)]

    def template(example, context):
        return segments

    encoder = Encoder(template=template, masking=get_registry().resolve("masking_strategies", "completion_only"),
                      tokenizer=tokenizer)
    tok = encoder.encode(Example())
    pieces = [tok.text[a:b] for a, b in tok.offsets]
    trained = [p for p, label in zip(pieces, tok.labels) if label != -100]
    assert " Paris" in pieces and trained == [" Paris", "<|im_end|>"]


def test_truncation_counts_lost_trained_tokens(tokenizer):
    encoder = Encoder.build(template="alpaca", tokenizer=tokenizer, max_length=10)
    long = Example(instruction="Repeat.", output="word " * 50)
    tok = encoder.encode(long)
    full = Encoder.build(template="alpaca", tokenizer=tokenizer).encode(long)
    assert len(tok.input_ids) == 10 and tok.truncated
    assert tok.length_before_truncation == len(full.input_ids)
    assert tok.trained_tokens_lost == full.num_trained  # the prompt alone is longer than 10 tokens
    assert tok.num_trained == 0


def test_add_special_tokens_makes_delimiters_single_tokens(fresh_tokenizer):
    template = get_registry().resolve("templates", "simple")
    assert "###response###" in split_markers(fresh_tokenizer, template.special_tokens)
    added = add_template_tokens(fresh_tokenizer, template)
    assert set(added) == set(template.special_tokens)
    assert split_markers(fresh_tokenizer, template.special_tokens) == {}
    assert len(fresh_tokenizer("###response###", add_special_tokens=False)["input_ids"]) == 1
    assert add_template_tokens(fresh_tokenizer, template) == []  # idempotent


def test_custom_template_and_unknown_options(tokenizer):
    encoder = Encoder.build(template="custom", tokenizer=tokenizer,
                            template_options={"prompt": "Q: {instruction} ({input})\n", "response": "A: {output}"})
    text = "".join(s.text for s in encoder.segments(example()))
    assert text == "Q: Add the numbers. (2 and 3)\nA: 5<|im_end|>"
    assert _trained_text(encoder, example(), tokenizer) == "5<|im_end|>"
    with pytest.raises(UsageError) as info:
        Encoder.build(template="alpaca", tokenizer=tokenizer, template_options={"colour": "red"})
    assert "'colour'" in str(info.value) and "alpaca" in str(info.value)
    with pytest.raises(UsageError) as info:
        Encoder.build(template="alpaca", masking="prompt_weighted", masking_options={"weight": "1"})
    assert "accepted options: prompt_weight" in info.value.hint


def test_tiny_random_model_matches_the_tokenizer(tokenizer):
    import torch

    model = load_model("tiny-random")
    assert model.config.vocab_size == len(tokenizer) and model.config.num_hidden_layers == 2
    again = load_model("tiny-random")
    assert torch.equal(model.model.embed_tokens.weight, again.model.embed_tokens.weight)  # seeded
    ids = torch.tensor([tokenizer("hello world")["input_ids"]])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tokenizer))


def test_unknown_model_offline_is_a_usage_error():
    from sftkit.models import load_tokenizer

    with pytest.raises(UsageError, match="not a local folder"):
        load_tokenizer("no-such-org/no-such-model-xyz")


def test_smollm2_is_cached_as_plain_safetensors(tokenizer):
    import json as _json

    from sftkit.models import gguf_path, smollm2_folder

    folder = smollm2_folder()
    assert gguf_path().suffix == ".gguf"
    config = _json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == len(tokenizer) == 49152
    assert (folder / "model.safetensors").stat().st_size > 100_000_000
