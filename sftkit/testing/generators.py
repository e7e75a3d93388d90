"""The conformance check of generators: greedy outputs equal one-at-a-time decoding.

The reference is a plain loop written here, independent of ``model.generate``: one prompt at a
time, the whole sequence through the model at every step (no cache, no padding), the argmax
appended, until a stop id or ``max_new_tokens``.
"""
from __future__ import annotations

from typing import Any, Sequence

from sftkit.testing.common import call, start_check

PROMPTS = ("Classify the sentiment: profits rose.", "Hi",
           "Summarize the following dialogue between two friends who meet at the station and talk about trains.",
           "What is the capital of France? Answer in one word.")
STOPPED = ("eos", "end_of_turn", "max_new_tokens")


class GeneratorUnavailable(Exception):
    """The generator cannot run here (its ``available()`` gave the reason): nothing was checked."""


def varied_tiny_model(seed: int = 0, scale: float = 0.2) -> Any:
    """``tiny-random`` with larger seeded weights, so that greedy outputs vary between prompts and seeds
    (the plain random init repeats one token)."""
    import torch

    from sftkit.models import load_model

    model = load_model("tiny-random")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return model.eval()


def reference_generations(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], stops: Any,
                          max_new_tokens: int) -> list:
    """One-at-a-time greedy decoding without a cache: what every generator must reproduce."""
    import torch

    from sftkit.generate import finish

    out = []
    with torch.inference_mode():
        for ids in prompt_ids:
            sequence, new = list(ids), []
            while len(new) < max_new_tokens:
                logits = model(input_ids=torch.tensor([sequence], device=model.device)).logits[0, -1]
                token = int(torch.argmax(logits))
                new.append(token)
                sequence.append(token)
                if token in stops.token_ids:
                    break
                if stops.strings and any(s in tokenizer.decode(new, skip_special_tokens=True) for s in stops.strings):
                    break
            out.append(finish(tokenizer, new, stops, max_new_tokens))
    return out


def _fresh_stop(generations: list, tokenizer: Any, eos: tuple) -> tuple[int, int] | None:
    """(prompt index, token id): a token first generated at position >= 1 of some output, not EOS."""
    for index, generation in enumerate(generations):
        ids = generation.token_ids
        for k in range(1, len(ids)):
            if ids[k] not in ids[:k] and ids[k] not in eos:
                return index, ids[k]
    return None


def _fresh_string(generations: list, tokenizer: Any) -> str | None:
    """A text of two or more tokens that occurs in some output after its first characters."""
    for generation in generations:
        ids = generation.token_ids
        for k in range(2, len(ids) - 1):
            text = tokenizer.decode(ids[k:k + 2], skip_special_tokens=True)
            if (text.strip() and len(tokenizer(text, add_special_tokens=False)["input_ids"]) > 1
                    and generation.text.find(text) > 0):
                return text
    return None


def check_generator(
    generator: Any,
    *,
    model: Any = None,
    tokenizer: Any = None,
    prompts: Sequence[str] | None = None,
    max_new_tokens: int = 8,
    options: dict | None = None,
    source: Any = None,
) -> list:
    """Check a generator's greedy outputs equal one-at-a-time decoding (``reference_generations``).

    On ``model`` (default: ``varied_tiny_model()``) and its tokenizer (default: tiny-random's),
    for ``prompts`` of different lengths: one ``sftkit.generate.Generation`` per prompt, in
    order, with the reference's token ids, text and stop reason; ``tokens`` equal to the ids
    kept and at most ``max_new_tokens``; the same when a generated token is made a stop id
    (cut before it, ``end_of_turn``) and when a generated text is made a stop string (text
    cut before it); no prompts give an empty list; the inputs are not modified. A generator
    with ``loads_model`` is given ``source`` (a ``sftkit.generate.ModelSource`` of the same
    weights as ``model``). Raises ``GeneratorUnavailable`` when its ``available()`` gives a
    reason, ``ConformanceError`` listing every problem otherwise; returns the outputs.
    """
    from sftkit.generate import Generation, stops_for

    component, problems, bound = start_check("generators", generator, options)
    available = component.attribute("available")
    reason = available() if callable(available) else None
    if reason:
        raise GeneratorUnavailable(f"generator {component.name!r}: {reason}")
    if component.attribute("loads_model") and source is None:
        raise GeneratorUnavailable(f"generator {component.name!r} loads the model itself: pass source=ModelSource(...)")
    version = component.attribute("version")
    if version is not None:
        ok, text = call(problems, "version", version)
        if ok and not (isinstance(text, str) and text.strip()):
            problems.add(f"version() must return non-empty text, got {text!r:.60}")
    if tokenizer is None:
        from sftkit.models import load_tokenizer

        tokenizer = load_tokenizer("tiny-random")
    model = model if model is not None else varied_tiny_model()
    given = source if component.attribute("loads_model") else model
    prompt_ids = tokenizer(list(prompts or PROMPTS), add_special_tokens=True)["input_ids"]
    plain = stops_for(tokenizer)
    expected = reference_generations(model, tokenizer, prompt_ids, plain, max_new_tokens)

    def run(stops: Any, what: str) -> list | None:
        saved = [list(ids) for ids in prompt_ids]
        ok, out = call(problems, what, bound, given, tokenizer, prompt_ids, stops, max_new_tokens)
        if [list(ids) for ids in prompt_ids] != saved:
            problems.add("the generator modified prompt_ids")
        if not ok:
            return None
        if not isinstance(out, list) or len(out) != len(prompt_ids):
            problems.add(f"{what}: expected a list of {len(prompt_ids)} Generation (one per prompt), got "
                         f"{type(out).__name__} of {len(out) if hasattr(out, '__len__') else '?'}")
            return None
        for i, g in enumerate(out):
            if not isinstance(g, Generation):
                problems.add(f"{what}: output {i} is a {type(g).__name__}, not a sftkit.generate.Generation")
                return None
            if not isinstance(g.text, str) or g.stopped not in STOPPED:
                problems.add(f"{what}: output {i} has text {type(g.text).__name__} and stopped {g.stopped!r} "
                             f"(expected text and one of {', '.join(STOPPED)})")
            if g.tokens != len(g.token_ids) or g.tokens > max_new_tokens:
                problems.add(f"{what}: output {i} counts {g.tokens} tokens for {len(g.token_ids)} ids kept "
                             f"(at most max_new_tokens={max_new_tokens})")
        return out

    def compare(out: list | None, reference: list, what: str, ids: bool = True) -> None:
        for i, (got, want) in enumerate(zip(out or [], reference)):
            if ids and tuple(got.token_ids) != tuple(want.token_ids):
                problems.add(f"{what}: prompt {i} gave ids {list(got.token_ids)}, one-at-a-time greedy decoding "
                             f"gives {list(want.token_ids)}")
            elif got.text != want.text or got.stopped != want.stopped:
                problems.add(f"{what}: prompt {i} gave {got.text!r} (stopped: {got.stopped}), one-at-a-time "
                             f"greedy decoding gives {want.text!r} (stopped: {want.stopped})")

    compare(run(plain, "generating"), expected, "generating")
    stop = _fresh_stop(expected, tokenizer, plain.eos_ids)
    if stop is not None:
        from sftkit.generate import Stops

        with_id = Stops(plain.token_ids + (stop[1],), (), plain.eos_ids)
        reference = reference_generations(model, tokenizer, prompt_ids, with_id, max_new_tokens)
        compare(run(with_id, "a generated token as stop id"), reference, "a generated token as stop id")
    text = _fresh_string(expected, tokenizer)
    if text is not None:
        from sftkit.generate import Stops

        with_text = Stops(plain.token_ids, (text,), plain.eos_ids)
        reference = reference_generations(model, tokenizer, prompt_ids, with_text, max_new_tokens)
        compare(run(with_text, f"stop string {text!r}"), reference, f"stop string {text!r}", ids=False)
    ok, empty = call(problems, "no prompts", bound, given, tokenizer, [], plain, max_new_tokens)
    if ok and empty != []:
        problems.add(f"no prompts must give an empty list, got {empty!r:.60}")
    problems.check()
    return expected
