"""The greedy decode loop (sftkit.decoding, through sftkit.generate.generate_ids) against
``model.generate`` run one prompt at a time, computed here: prompts of many lengths, stop
tokens that end rows at different steps (rows leave the batch, waiting prompts join),
max_new_tokens, bounded batches, the shared prefix, and the fallback to ``model.generate``."""
from __future__ import annotations

import pytest
import torch

from sftkit import decoding
from sftkit.generate import STOP_END_OF_TURN, STOP_EOS, STOP_LIMIT, Stops, generate_ids

WORDS = ("the market rose while shares of the bank fell sharply after a weak quarter and the "
         "chairman said nothing at all about the plans for next year").split()


@pytest.fixture(scope="module")
def tok():
    from sftkit.models import load_tokenizer

    return load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def model():
    """tiny-random with larger seeded weights, so that greedy outputs vary."""
    from sftkit.models import load_model

    model = load_model("tiny-random")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.eval()


def prompt_ids(tok, lengths, prefix=""):
    """Token ids of prompts of about these word counts (all starting with ``prefix``)."""
    return [tok(prefix + " ".join(WORDS[(i * 3) % 7:][:n]))["input_ids"] for i, n in enumerate(lengths)]


def one_at_a_time(model, prompts, max_new_tokens, stop_ids):
    """model.generate on each prompt alone (no padding), cut before the first stop token."""
    outputs = []
    with torch.inference_mode():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 eos_token_id=list(stop_ids), pad_token_id=stop_ids[0])
            new = out[0, len(ids):].tolist()
            cut = next((k for k, token in enumerate(new) if token in stop_ids), len(new))
            outputs.append(tuple(new[:cut]))
    return outputs


def stops_ending_rows_early(model, tok, prompts, max_new_tokens):
    """Stop ids (EOS plus tokens the free outputs produce at different steps) and the free outputs."""
    free = one_at_a_time(model, prompts, max_new_tokens, [tok.eos_token_id])
    chosen = [tok.eos_token_id]
    for row, step in ((0, 2), (1, 5), (3, 7)):
        if len(free[row]) > step and free[row][step] not in chosen:
            chosen.append(free[row][step])
    return chosen


def test_the_loop_runs_for_plain_decoder_models(model):
    assert decoding.supports(model)


@pytest.mark.parametrize("batch_size", [1, 3, 5])
def test_outputs_equal_one_prompt_at_a_time_as_rows_stop_at_different_steps(model, tok, batch_size):
    prompts = prompt_ids(tok, [1, 14, 3, 22, 7, 9, 2, 18, 5, 11, 25])
    max_new = 12
    stop_ids = stops_ending_rows_early(model, tok, prompts, max_new)
    assert len(stop_ids) >= 3  # the random model produced tokens to stop at
    expected = one_at_a_time(model, prompts, max_new, stop_ids)
    lengths = sorted({len(e) for e in expected})
    assert len(lengths) >= 3, lengths  # rows end at different steps
    stops = Stops(tuple(stop_ids), (), (tok.eos_token_id,))
    out = generate_ids(model, tok, prompts, stops, max_new_tokens=max_new, batch_size=batch_size, progress=False)
    assert [g.token_ids for g in out] == expected
    for g, e in zip(out, expected):
        assert g.tokens == len(e)
        assert g.text == tok.decode(list(e), skip_special_tokens=True)
        if len(e) == max_new:
            assert g.stopped == STOP_LIMIT
        else:
            assert g.stopped in (STOP_EOS, STOP_END_OF_TURN)


def test_a_shared_prefix_and_bounded_batches_change_no_token(model, tok, monkeypatch):
    prompts = prompt_ids(tok, [4, 12, 1, 20, 6, 9, 15, 2], prefix="Summarize the text below in one sentence please:\n")
    max_new, bound = 9, 160
    stop_ids = stops_ending_rows_early(model, tok, prompts, max_new)
    expected = one_at_a_time(model, prompts, max_new, stop_ids)
    seen = []
    original = type(model).forward

    def spy(self, *args, **kwargs):
        seen.append((kwargs["input_ids"].shape, kwargs["attention_mask"].shape))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    stops = Stops(tuple(stop_ids), (), (tok.eos_token_id,))
    out = generate_ids(model, tok, prompts, stops, max_new_tokens=max_new, batch_size=4, max_batch_tokens=bound,
                       progress=False)
    monkeypatch.undo()
    assert [g.token_ids for g in out] == expected
    decode_steps = [(ids, mask) for ids, mask in seen if ids[1] == 1]
    assert decode_steps and max(ids[0] for ids, _ in decode_steps) <= 4
    for ids, mask in decode_steps:  # rows x cache width within the bound (a lone row may exceed it)
        assert ids[0] == 1 or ids[0] * mask[1] <= bound
    assert len({ids[0] for ids, _ in decode_steps}) >= 2  # the batch shrank as rows stopped


def test_max_new_tokens_one_and_a_stop_at_the_first_token(model, tok):
    prompts = prompt_ids(tok, [3, 8, 1, 13])
    first = one_at_a_time(model, prompts, 1, [tok.eos_token_id])
    out = generate_ids(model, tok, prompts, Stops((tok.eos_token_id,), (), (tok.eos_token_id,)), max_new_tokens=1,
                       batch_size=2, progress=False)
    assert [g.token_ids for g in out] == first and all(g.stopped == STOP_LIMIT for g in out)
    stop = first[1][0]  # the first token of prompt 1 stops it at once
    out = generate_ids(model, tok, prompts, Stops((stop,), (), ()), max_new_tokens=6, batch_size=2, progress=False)
    assert out[1].token_ids == () and out[1].stopped == STOP_END_OF_TURN
    assert [g.token_ids for g in out] == one_at_a_time(model, prompts, 6, [stop])


def test_a_model_whose_generation_config_changes_greedy_keeps_model_generate(model, tok, monkeypatch):
    monkeypatch.setattr(model.generation_config, "repetition_penalty", 1.5)
    assert not decoding.supports(model)
    prompts = prompt_ids(tok, [2, 9, 5])
    stops = Stops((tok.eos_token_id,), (), (tok.eos_token_id,))
    out = generate_ids(model, tok, prompts, stops, max_new_tokens=8, batch_size=2, progress=False)
    assert [g.token_ids for g in out] == one_at_a_time(model, prompts, 8, [tok.eos_token_id])  # penalty applied
    monkeypatch.undo()
    plain = generate_ids(model, tok, prompts, stops, max_new_tokens=8, batch_size=2, progress=False)
    assert [g.token_ids for g in plain] != [g.token_ids for g in out]  # the penalty changed something


def test_a_prompt_does_not_join_a_batch_that_would_pad_it_too_much(model, tok, monkeypatch):
    prompts = prompt_ids(tok, [25, 1, 2, 1])
    monkeypatch.setattr(decoding, "MAX_JOIN_PADDING", 6)
    assert len(prompts[0]) - max(len(p) for p in prompts[1:]) > 6
    seen = []
    original = type(model).forward

    def spy(self, *args, **kwargs):
        seen.append(kwargs["input_ids"].shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    stops = Stops((tok.eos_token_id,), (), (tok.eos_token_id,))
    out = generate_ids(model, tok, prompts, stops, max_new_tokens=5, batch_size=4, share_prefix=False, progress=False)
    monkeypatch.undo()
    assert seen[0] == (1, len(prompts[0]))  # the long prompt prefills alone
    assert all(shape[0] == 1 for shape in seen[1:5])  # and decodes alone until it stops
    assert max(shape[0] for shape in seen) == 3  # then the short ones decode together
    assert [g.token_ids for g in out] == one_at_a_time(model, prompts, 5, [tok.eos_token_id])
