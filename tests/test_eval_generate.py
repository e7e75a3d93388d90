"""Batched greedy generation (sftkit.generate) on the tiny random model: left padding, the
same tokens as one prompt at a time, stops at EOS / end of turn / max-new-tokens, and
prompts that are the training text minus the response."""
from __future__ import annotations

import pytest
import torch

from sftkit.generate import STOP_END_OF_TURN, STOP_EOS, STOP_LIMIT, generate, stops_for

PROMPTS = [
    "Classify the sentiment: profits rose.",
    "Hi",
    "Summarize the following dialogue between two friends who meet at the station and talk about trains.",
    "What is the capital of France? Answer in one word.",
    "One more prompt of a middling length here.",
]


@pytest.fixture(scope="module")
def model():
    """tiny-random with larger seeded weights: its greedy outputs vary instead of repeating one token."""
    import torch

    from sftkit.models import load_model

    model = load_model("tiny-random")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def tok():
    from sftkit.models import load_tokenizer

    return load_tokenizer("tiny-random")


def first_new_token(ids: tuple[int, ...], tok, start: int = 2) -> int:
    """An index k >= start whose token first appears at k and is a single token on its own."""
    for k in range(start, len(ids)):
        if ids[k] in ids[:k] or ids[k] == tok.eos_token_id:
            continue
        text = tok.decode([ids[k]])
        if text.strip() and tok(text, add_special_tokens=False)["input_ids"] == [ids[k]]:
            return k
    pytest.skip("the random model produced no usable stop token")


def test_batched_equals_one_prompt_at_a_time(model, tok):
    batched = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=4, progress=False)
    single = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=1, progress=False)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.tokens == 12 and g.stopped == STOP_LIMIT for g in single)
    assert tok.padding_side == "right"  # restored after generation


def forward_calls(model, monkeypatch):
    """Record (input_ids, attention_mask, position_ids) of every forward call of ``model``."""
    seen = []
    original = type(model).forward

    def spy(self, *args, **kwargs):
        seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone(), kwargs["position_ids"].clone()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    return seen


def test_prompts_are_left_padded_and_answers_come_back_in_order(model, tok, monkeypatch):
    seen = forward_calls(model, monkeypatch)
    same_length = ["One two three four.", "Five six seven eight.", "A b c d e f g h i j.", "Hi"]
    lengths = [len(tok(p)["input_ids"]) for p in same_length]
    out = generate(model, tok, same_length, max_new_tokens=3, batch_size=4, share_prefix=False, progress=False)
    monkeypatch.undo()
    prefills = [call for call in seen if call[0].shape[1] > 1]
    ids, mask, positions = prefills[0]
    # the longest first; a prompt joins a prefill when its padding there is small
    assert mask.sum(dim=1).tolist() == sorted(mask.sum(dim=1).tolist(), reverse=True)
    assert mask[:, -1].all()  # every row ends with its last prompt token: padding is on the left
    for row in range(ids.shape[0]):
        real = int(mask[row].sum())
        assert (ids[row, : ids.shape[1] - real] == tok.pad_token_id).all()
        assert positions[row, -real:].tolist() == list(range(real))  # counted from the first real token
    assert sorted(int(m.sum()) for _, call_mask, _ in prefills for m in call_mask) == sorted(lengths)
    alone = [generate(model, tok, [p], max_new_tokens=3, progress=False)[0].token_ids for p in same_length]
    assert [g.token_ids for g in out] == alone  # original order restored


def test_stops_at_the_end_of_turn_token(model, tok):
    free = generate(model, tok, PROMPTS[:1], max_new_tokens=10, progress=False)[0]
    k = first_new_token(free.token_ids, tok)
    end = tok.decode([free.token_ids[k]])
    assert stops_for(tok, [end]).token_ids[-1] == free.token_ids[k]
    cut = generate(model, tok, PROMPTS[:1], max_new_tokens=10, end_texts=[end], progress=False)[0]
    assert cut.stopped == STOP_END_OF_TURN
    assert cut.token_ids == free.token_ids[:k] and cut.tokens == k
    assert cut.text == tok.decode(list(free.token_ids[:k]), skip_special_tokens=True)


def test_stops_at_eos(model, fresh_tokenizer):
    tok = fresh_tokenizer
    free = generate(model, tok, PROMPTS[:1], max_new_tokens=10, progress=False)[0]
    k = first_new_token(free.token_ids, tok)
    tok.eos_token = tok.convert_ids_to_tokens(free.token_ids[k])
    cut = generate(model, tok, PROMPTS[:1], max_new_tokens=10, progress=False)[0]
    assert cut.stopped == STOP_EOS and cut.token_ids == free.token_ids[:k]


def test_stops_at_an_end_text_of_several_tokens(model, tok):
    free = generate(model, tok, PROMPTS[:1], max_new_tokens=12, progress=False)[0]
    k = first_new_token(free.token_ids, tok, start=3)
    end = tok.decode(list(free.token_ids[k:k + 2]))
    if len(tok(end, add_special_tokens=False)["input_ids"]) < 2 or end in free.text[: free.text.find(end)]:
        pytest.skip("the two tokens merge into one; nothing to test")
    assert end in stops_for(tok, [end]).strings
    cut = generate(model, tok, PROMPTS[:1], max_new_tokens=12, end_texts=[end], progress=False)[0]
    assert cut.stopped == STOP_END_OF_TURN
    assert cut.text == free.text[: free.text.find(end)]


def test_prompt_is_the_training_text_minus_the_response(tokenizer):
    from sftkit import Example
    from sftkit.pipeline import Encoder, end_of_turn

    encoder = Encoder.build(template="alpaca", tokenizer=tokenizer)
    example = Example(instruction="Classify the sentiment.", input="Profits rose.", output="positive")
    prompt = encoder.prompt(example)
    trained = encoder.encode(example)
    assert trained.text == prompt + "positive" + tokenizer.eos_token
    assert prompt.endswith("### Response:\n")
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert trained.input_ids[: len(prompt_ids)] == prompt_ids  # the same tokens as in training
    assert all(label == -100 for label in trained.labels[: len(prompt_ids)])
    assert end_of_turn(encoder.segments(example)) == tokenizer.eos_token


def test_bad_settings_are_rejected(model, tok):
    with pytest.raises(ValueError):
        generate(model, tok, PROMPTS, batch_size=0, progress=False)
    with pytest.raises(ValueError):
        generate(model, tok, PROMPTS, max_new_tokens=0, progress=False)


def test_batches_are_longest_first_and_bounded_in_padded_tokens():
    from sftkit.generate import make_batches

    lengths = [90, 1363, 36, 100, 80, 120, 40, 60]
    batches = make_batches(lengths, batch_size=4, max_batch_tokens=4096)
    assert batches == [[1, 5, 3], [0, 4, 7, 6], [2]]  # 3 x 1363 <= 4096 < 4 x 1363
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 4 and len(batch) * max(lengths[i] for i in batch) <= 4096
    assert make_batches(lengths, batch_size=4, max_batch_tokens=None) == [[1, 5, 3, 0], [4, 7, 6, 2]]
    assert make_batches([5000, 10], batch_size=4, max_batch_tokens=100) == [[0], [1]]  # a long prompt alone


def test_a_shared_prompt_prefix_runs_once_and_changes_no_token(model, tok, monkeypatch):
    from sftkit.generate import shared_prefix_length

    preamble = "Below is an instruction. Classify the sentiment of this sentence as positive or negative.\n\n"
    prompts = [preamble + tail for tail in ("Profits rose.", "The plant closed and 140 people lost their jobs.",
                                            "Sales were flat.", "Shares soared after the record quarter!")]
    encoded = tok(prompts)["input_ids"]
    shared = shared_prefix_length(encoded)
    assert shared >= 15 and all(ids[:shared] == encoded[0][:shared] for ids in encoded)
    seen = forward_calls(model, monkeypatch)
    batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=4, progress=False)
    monkeypatch.undo()
    prefix, *prefills = [call for call in seen if call[0].shape[1] > 1]
    assert prefix[0].tolist() == [encoded[0][:shared]]  # the prefix runs once, alone
    # each prompt then runs only its own tokens, its positions continuing after the prefix
    assert sorted(int(m[shared:].sum()) for _, mask, _ in prefills for m in mask) == \
        sorted(len(ids) - shared for ids in encoded)
    for ids, mask, positions in prefills:
        assert mask.shape[1] == shared + ids.shape[1] and mask[:, :shared].all()
        assert (positions[:, -1] + 1 == mask.sum(dim=1)).all()
    alone = []
    for ids in encoded:  # one prompt at a time with model.generate, no prefix cache
        out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        alone.append(tuple(out[0, len(ids):].tolist()))
    assert [g.token_ids for g in batched] == alone
    assert shared_prefix_length([[1, 2, 3], [1, 2]]) == 1  # every prompt keeps a token of its own
    assert shared_prefix_length([[5, 6], [7, 6]]) == 0
