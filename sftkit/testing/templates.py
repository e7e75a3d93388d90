"""The conformance check of templates."""
from __future__ import annotations

import copy
from typing import Any, Sequence

from sftkit.registry import get_registry
from sftkit.testing.common import Problems, call, start_check
from sftkit.testing.samples import sample_examples
from sftkit.types import Example, RenderContext, Segment

PARTS = ("marker", "content", "end")
ROLES = ("system", "user", "assistant")


def check_template(
    template: Any,
    *,
    examples: Sequence[Example] | None = None,
    tokenizer: Any = None,
    context: RenderContext | None = None,
    options: dict | None = None,
) -> list[list[Segment]]:
    """Check a template renders examples into well-formed segments that mask correctly.

    Checked per example: a list of ``Segment`` with known roles and parts; the final response
    in an assistant ``content`` segment, followed by a non-empty ``end`` segment and nothing but
    markers after it; the prompt text present; the same output twice; the example unchanged.
    Also: declared ``markers`` appear in some rendering; ``special_tokens`` are strings;
    ``jinja`` is a string or ``jinja(**options) -> str``. With a ``tokenizer``: completion-only
    masking trains the response's tokens; each marker tokenizes where the template renders it
    as it does alone (the tokenization validator's ``marker_split`` check), with a hint when
    the difference is only the whitespace before it; the ``jinja`` chat template, for these
    ``options``, renders the same text and generation prompt as the template. Returns the
    segments of each example.
    """
    component, problems, bound = start_check("templates", template, options)
    own_examples = examples is not None
    examples = list(examples) if own_examples else sample_examples()
    if context is None:
        from sftkit.tokenize import context_for

        context = context_for(tokenizer) if tokenizer is not None else RenderContext(eos_token="</s>", bos_token="<s>")
    rendered: list[list[Segment]] = []
    done: list[Example] = []  # the examples that rendered, aligned with ``rendered``
    for example in examples:
        before = copy.deepcopy(example)
        ok, segments = call(problems, f"rendering row {example.row}", bound, example, context)
        if not ok:
            continue
        if not isinstance(segments, list) or not all(isinstance(s, Segment) for s in segments):
            problems.add(f"row {example.row}: returned {type(segments).__name__}, expected a list of sftkit.Segment")
            continue
        rendered.append(segments)
        done.append(example)
        _check_segments(example, segments, context, problems)
        ok, again = call(problems, f"rendering row {example.row} a second time", bound, example, context)
        if ok and again != segments:
            problems.add(f"row {example.row}: two renderings of the same example differ (a template must be "
                         "deterministic)")
        if example != before:
            problems.add(f"row {example.row}: rendering modified the example (templates must not mutate it)")
    joined = ["".join(s.text for s in segs) for segs in rendered]
    for attr in ("markers", "special_tokens"):
        values = getattr(component.func, attr, None)
        if values is None:
            continue
        if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
            problems.add(f"attribute {attr} must be a tuple of non-empty strings, got {values!r}")
            continue
        if attr == "markers":
            for marker in values:
                if not own_examples and not any(marker in text for text in joined):
                    problems.add(f"marker {marker!r} appears in none of the renderings (markers are delimiters "
                                 "the template writes)")
    jinja = _jinja(component, bound, problems)
    if tokenizer is not None and rendered:
        _check_trained_tokens(done, rendered, tokenizer, problems)
        markers = getattr(component.func, "markers", None)
        if markers and not isinstance(markers, str) and all(isinstance(m, str) and m for m in markers):
            _check_marker_tokens(markers, rendered, tokenizer, problems)
        if jinja is not None:
            _check_jinja(jinja, done, rendered, tokenizer, problems)
    problems.check()
    return rendered


def _check_segments(example: Example, segments: list[Segment], context: RenderContext, problems: Problems) -> None:
    where = f"row {example.row}"
    for index, seg in enumerate(segments):
        if not isinstance(seg.text, str):
            problems.add(f"{where}: segment {index} text is {type(seg.text).__name__}, not str")
            return
        if seg.role not in ROLES:
            problems.add(f"{where}: segment {index} has role {seg.role!r}; roles are {', '.join(ROLES)}")
        if seg.part not in PARTS:
            problems.add(f"{where}: segment {index} has part {seg.part!r}; parts are {', '.join(PARTS)}")
        if not isinstance(seg.turn, int) or seg.turn < -1:
            problems.add(f"{where}: segment {index} has turn {seg.turn!r}; turns are message indices or -1")
    responses = [i for i, s in enumerate(segments) if s.role == "assistant" and s.part == "content"]
    if not responses:
        problems.add(f"{where}: no segment has role='assistant', part='content'; masking strategies train only "
                     "those (and the end segment), so nothing would train")
        return
    last_turn = max(segments[i].turn for i in responses)
    response_text = "".join(segments[i].text for i in responses if segments[i].turn == last_turn)
    expected = example.response_text()
    if expected not in response_text:
        problems.add(f"{where}: the final response {expected!r} is not in the assistant content segments of the "
                     f"last turn ({response_text!r})")
    ends = [i for i, s in enumerate(segments) if s.role == "assistant" and s.part == "end" and s.turn == last_turn]
    if not ends:
        problems.add(f"{where}: the final assistant turn has no part='end' segment (the EOS or end-of-turn text "
                     "that teaches the model to stop)")
    else:
        end = ends[-1]
        if not segments[end].text:
            problems.add(f"{where}: the end segment is empty (use context.eos_token or the template's end-of-turn)")
        if end < max(i for i in responses if segments[i].turn == last_turn):
            problems.add(f"{where}: the end segment comes before the final response")
        trailing = [s for s in segments[end + 1:] if s.part != "marker"]
        if trailing:
            problems.add(f"{where}: content after the final end segment: {trailing[0]!r}")
    prompt_side = "".join(s.text for s in segments if not (s.role == "assistant" and s.part != "marker"))
    wanted = [m.content for m in example.turns() if m.role == "user"][-1:]
    if not example.is_conversation:
        wanted = [t for t in (example.instruction, example.input) if t]
    for text in wanted:
        if text not in prompt_side:
            problems.add(f"{where}: the prompt text {text!r} is missing from the rendering")


def _jinja(component, bound, problems: Problems) -> str | None:
    """The template's chat template for the bound options (``sftkit.runs.template_jinja``), or None."""
    from sftkit.runs import template_jinja

    jinja = getattr(component.func, "jinja", None)
    if jinja is None:
        return None
    if not (isinstance(jinja, str) or callable(jinja)):
        problems.add(f"attribute jinja must be a string (a chat template) or a function jinja(**options) -> str, "
                     f"got {type(jinja).__name__}")
        return None
    ok, text = call(problems, "jinja(**options)", template_jinja, bound)
    return text if ok else None


def _check_marker_tokens(markers, rendered, tokenizer, problems: Problems) -> None:
    """Each marker tokenizes where the template renders it as alone (else ``marker_split`` on every row)."""
    from sftkit.tokenize import marker_tokens, tokenize_many

    tokenized = tokenize_many([(segments, [0.0] * len(segments)) for segments in rendered], tokenizer)
    for marker in markers:
        alone = tokenizer(marker, add_special_tokens=False)["input_ids"]
        for segments, tokens in zip(rendered, tokenized):
            found = marker_tokens(tokens, segments, marker)
            if found is None:
                continue
            if not (found.aligned and found.ids == alone):
                pieces, context = tokenizer.convert_ids_to_tokens(alone), tokenizer.convert_ids_to_tokens(found.ids)
                if found.leading:
                    problems.add(f"marker {marker!r} is rendered after {found.leading!r}, which its first token "
                                 f"absorbs ({context} in context, {pieces} alone): declare markers as they appear "
                                 f"in context, here {found.leading + marker!r}")
                else:
                    problems.add(f"marker {marker!r} tokenizes as {context} where the template renders it but as "
                                 f"{pieces} alone: validate flags marker_split on every row (put a newline before "
                                 "it, declare it with the text it merges with, or make it a special token)")
            break


def _check_jinja(jinja: str, examples, rendered, tokenizer, problems: Problems) -> None:
    """The ``jinja`` chat template saved with trained models renders what the template renders."""
    from sftkit.pipeline import generation_prompt
    from sftkit.runs import chat_messages

    saved = tokenizer.chat_template
    tokenizer.chat_template = jinja
    try:
        for example, segments in zip(examples, rendered):
            joined = "".join(s.text for s in segments)
            full = tokenizer.apply_chat_template(chat_messages(example, include_response=True), tokenize=False)
            if full != joined:
                problems.add(f"row {example.row}: the jinja chat template renders {full!r}, the template {joined!r}")
            prompt = tokenizer.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True)
            if prompt != generation_prompt(segments):
                problems.add(f"row {example.row}: the jinja generation prompt {prompt!r} differs from the "
                             f"rendered prompt {generation_prompt(segments)!r}")
    except Exception as exc:  # a Jinja syntax or runtime error
        problems.add(f"the jinja chat template fails: {type(exc).__name__}: {exc}")
    finally:
        tokenizer.chat_template = saved


def _check_trained_tokens(examples, rendered, tokenizer, problems: Problems) -> None:
    registry = get_registry()
    completion_only = registry.resolve("masking_strategies", registry.default_name("masking_strategies"))
    from sftkit.tokenize import tokenize_many

    items = [(segments, completion_only(segments)) for segments in rendered]
    for example, tokenized in zip(examples, tokenize_many(items, tokenizer)):
        trained = "".join(tokenized.text[a:b] for (a, b), label in zip(tokenized.offsets, tokenized.labels)
                          if label != -100)
        if tokenized.num_trained == 0:
            problems.add(f"row {example.row}: no token trains under the default masking strategy")
        elif example.response_text().strip() not in trained:
            problems.add(f"row {example.row}: the trained tokens {trained!r} do not cover the response")
