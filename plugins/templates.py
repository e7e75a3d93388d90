"""Built-in prompt templates: alpaca, simple, human_assistant, chatml, chat_template, custom.

A template turns an Example into role-tagged Segments. Markers (``### Response:``) are
``part="marker"``, message text is ``part="content"`` and the token that closes an assistant
turn (EOS or end-of-turn) is ``part="end"``. Masking strategies decide what trains from these
tags alone, so no template ever searches for a marker in token ids.
"""
from __future__ import annotations

import string
from typing import Annotated

from pydantic import AfterValidator, Field

from sftkit import DataError, Example, RenderContext, Segment, UsageError, hookimpl

ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n"
)


def _end(context: RenderContext, turn: int) -> Segment:
    return Segment(context.eos_token, "assistant", "end", turn)


def alpaca(example: Example, context: RenderContext) -> list[Segment]:
    """Stanford Alpaca: preamble, ### Instruction:, optional ### Input:, ### Response:."""
    if not example.is_conversation:
        has_input = bool(example.input)
        preamble = example.system + "\n\n" if example.system else (ALPACA_PREAMBLE_INPUT if has_input else ALPACA_PREAMBLE)
        segments = [
            Segment(preamble, "system", "marker", -1),
            Segment("### Instruction:\n", "user", "marker", 0),
            Segment(example.instruction, "user", "content", 0),
        ]
        if has_input:
            segments += [Segment("\n\n### Input:\n", "user", "marker", 0), Segment(example.input, "user", "content", 0)]
        segments += [
            Segment("\n\n### Response:\n", "assistant", "marker", 1),
            Segment(example.output, "assistant", "content", 1),
            _end(context, 1),
        ]
        return segments
    turns = example.turns()
    system = next((m.content for m in turns if m.role == "system"), "")
    segments = [Segment(system + "\n\n" if system else ALPACA_PREAMBLE, "system", "marker", -1)]
    for index, message in enumerate(turns):
        if message.role not in ("system", "assistant"):
            lead = "### Instruction:\n" if index <= 1 else "\n\n### Instruction:\n"
            segments += [Segment(lead, "user", "marker", index), Segment(message.content, "user", "content", index)]
        elif message.role == "assistant":
            segments += [
                Segment("\n\n### Response:\n", "assistant", "marker", index),
                Segment(message.content, "assistant", "content", index),
                _end(context, index),
            ]
    return segments


alpaca.markers = ("### Instruction:", "### Input:", "### Response:")

# Jinja form of the template for the saved tokenizer's chat_template. A single-turn example
# with an input may pass it as extra keys of the user message, {"role": "user", "content":
# instruction + "\n\n" + input, "instruction": ..., "input": ...} (``sftkit.runs.chat_messages``),
# to get the ### Input: section; other templates only read "content".
alpaca.jinja = (
    "{% set ns = namespace(inp=false) %}"
    "{% for m in messages %}{% if m.get('input') %}{% set ns.inp = true %}{% endif %}{% endfor %}"
    "{% set sys = messages | selectattr('role', 'equalto', 'system') | list %}"
    "{% if sys %}{{ sys[0]['content'] + '\\n\\n' }}"
    "{% elif ns.inp %}{{ 'Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\\n\\n' }}"
    "{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\\n\\n' }}{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ '\\n\\n### Response:\\n' + m['content'] + eos_token }}"
    "{% elif m['role'] != 'system' %}{{ ('### Instruction:\\n' if loop.index0 <= 1 else '\\n\\n### Instruction:\\n') + (m['instruction'] if m.get('input') else m['content']) }}"
    "{% if m.get('input') %}{{ '\\n\\n### Input:\\n' + m['input'] }}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\n### Response:\\n' }}{% endif %}"
)


def _tagged(example: Example, context: RenderContext, user_tag: str, assistant_tag: str, system_tag: str) -> list[Segment]:
    segments: list[Segment] = []
    for index, message in enumerate(example.turns()):
        lead = "" if not segments else "\n"
        if message.role == "system":
            segments += [Segment(f"{system_tag}\n", "system", "marker", index), Segment(message.content, "system", "content", index)]
        elif message.role != "assistant":
            segments += [Segment(f"{lead}{user_tag}\n", "user", "marker", index), Segment(message.content, "user", "content", index)]
        else:
            segments += [
                Segment(f"\n{assistant_tag}\n", "assistant", "marker", index),
                Segment(message.content, "assistant", "content", index),
                _end(context, index),
            ]
    return segments


def simple(example: Example, context: RenderContext) -> list[Segment]:
    """###instruction### <instruction and input> / ###response### <response>."""
    return _tagged(example, context, "###instruction###", "###response###", "###system###")


simple.markers = ("###instruction###", "###response###", "###system###")
simple.special_tokens = simple.markers
simple.jinja = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '###system###\\n' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{{ '\\n###response###\\n' + m['content'] + eos_token }}"
    "{% else %}{{ ('\\n' if not loop.first else '') + '###instruction###\\n' + m['content'] }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n###response###\\n' }}{% endif %}"
)


def human_assistant(example: Example, context: RenderContext) -> list[Segment]:
    """###human### <prompt> / ###assistant### <response>, turn after turn."""
    return _tagged(example, context, "###human###", "###assistant###", "###system###")


human_assistant.markers = ("###human###", "###assistant###", "###system###")
human_assistant.special_tokens = human_assistant.markers
human_assistant.jinja = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ '###system###\\n' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{{ '\\n###assistant###\\n' + m['content'] + eos_token }}"
    "{% else %}{{ ('\\n' if not loop.first else '') + '###human###\\n' + m['content'] }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n###assistant###\\n' }}{% endif %}"
)


def chatml(example: Example, context: RenderContext) -> list[Segment]:
    """ChatML: <|im_start|>role ... <|im_end|>, every turn."""
    segments: list[Segment] = []
    for index, message in enumerate(example.turns()):
        role = message.role
        segments.append(Segment(f"<|im_start|>{role}\n", role, "marker", index))
        segments.append(Segment(message.content, role, "content", index))
        if role == "assistant":
            segments.append(Segment("<|im_end|>", role, "end", index))
            segments.append(Segment("\n", role, "marker", index))
        else:
            segments.append(Segment("<|im_end|>\n", role, "marker", index))
    return segments


chatml.markers = ("<|im_start|>", "<|im_end|>")
chatml.special_tokens = chatml.markers
chatml.jinja = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_template(example: Example, context: RenderContext) -> list[Segment]:
    """The tokenizer's own Jinja chat template (multi-turn), split into segments by rendering turn by turn."""
    tokenizer = context.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UsageError("template 'chat_template' needs a tokenizer with a chat template",
                         hint="pass --model, or choose another --template such as chatml")
    turns = [{"role": m.role, "content": m.content} for m in example.turns()]
    segments: list[Segment] = []
    rendered = ""  # the template's own output so far (an EOS added below is not part of it)
    for index, message in enumerate(turns):
        text = tokenizer.apply_chat_template(turns[: index + 1], tokenize=False)
        if not text.startswith(rendered):
            raise DataError(
                "the tokenizer's chat template is not prefix-preserving: rendering one more turn changed "
                "the earlier text, so turns cannot be masked reliably", row=example.row,
                hint="use --template chatml (or another built-in template)")
        delta = text[len(rendered):]
        role = message["role"]
        head, content, tail = _split_turn(tokenizer, turns[: index + 1], rendered, delta)
        rendered = text
        if head:
            segments.append(Segment(head, role, "marker", index))
        if content:
            segments.append(Segment(content, role, "content", index))
        if role == "assistant":
            end = tail.rstrip()
            if not end:  # the template does not close the turn: the EOS closes it (and trains)
                end, trailer = context.eos_token, tail
            else:
                trailer = tail[len(end):]
            segments.append(Segment(end, role, "end", index))
            if trailer:
                segments.append(Segment(trailer, role, "marker", index))
        elif tail:
            segments.append(Segment(tail, role, "marker", index))
    return segments


CONTENT_PROBE = "\ue000sftkit-content\ue001"  # private-use characters: never in a chat template


def _split_turn(tokenizer, turns: list[dict], rendered: str, delta: str) -> tuple[str, str, str]:
    """Split one turn's rendered text into (header, content, trailer).

    The turn is rendered again with its content replaced by a probe string, so the content is
    located by position, not searched for: content that also occurs in the header (a message
    "assistant", "\\n", or an empty message) cannot be mistaken for it. A template that
    changes the content (e.g. trims it) falls back to searching; content not found at all
    stays in the header, which never trains under completion_only.
    """
    content = turns[-1]["content"]
    probe = turns[:-1] + [{**turns[-1], "content": CONTENT_PROBE}]
    probed = tokenizer.apply_chat_template(probe, tokenize=False)
    if probed.startswith(rendered):
        probe_delta = probed[len(rendered):]
        at = probe_delta.find(CONTENT_PROBE)
        if at >= 0:
            head, tail = probe_delta[:at], probe_delta[at + len(CONTENT_PROBE):]
            if head + content + tail == delta:
                return head, content, tail
    at = delta.find(content) if content else -1
    if at < 0:
        return delta, "", ""
    return delta[:at], content, delta[at + len(content):]


def plain(example: Example, context: RenderContext) -> list[Segment]:
    """No markers: the prompt text directly followed by the response and EOS (raw text, prompt-completion)."""
    segments = []
    for index, message in enumerate(example.turns()):
        if message.role == "assistant":
            segments += [Segment(message.content, "assistant", "content", index), _end(context, index)]
        elif message.content:
            segments.append(Segment(message.content, message.role, "content", index))
    return segments


plain.jinja = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + eos_token }}"
    "{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
)


CUSTOM_FIELDS = ("instruction", "input", "output", "system", "prompt", "eos", "bos")


def _template_text(pattern: str) -> str:
    """A custom template string whose {fields} are known (checked before any data is read)."""
    try:
        fields = [field for _literal, field, _spec, _conv in string.Formatter().parse(pattern) if field is not None]
    except ValueError as exc:
        raise ValueError(f"a template string with balanced braces ({exc}; a literal brace is {{{{ or }}}})") from None
    unknown = [field for field in fields if field not in CUSTOM_FIELDS]
    if unknown:
        raise ValueError("a template string whose fields are among " + ", ".join("{%s}" % f for f in CUSTOM_FIELDS)
                         + f" (not {{{unknown[0]}}})")
    return pattern


TemplateText = Annotated[str, AfterValidator(_template_text)]


class CustomTemplate:
    """Template strings from YAML or options: prompt, response and end, with {fields}."""

    def __call__(
        self,
        example: Example,
        context: RenderContext,
        prompt: Annotated[TemplateText, Field(description="the prompt, e.g. {instruction}\\n{input}\\n")] = (
            "{instruction}\n{input}\n"),
        response: Annotated[TemplateText, Field(description="the response (trained)")] = "{output}",
        end: Annotated[TemplateText, Field(description="what closes the response (trained)")] = "{eos}",
        prompt_no_input: Annotated[TemplateText, Field(description="the prompt for rows without input "
                                                                   "(default: prompt)")] = "",
    ) -> list[Segment]:
        values = {
            "instruction": example.instruction,
            "input": example.input,
            "output": example.response_text(),
            "system": example.system,
            "prompt": example.prompt_text(),
            "eos": context.eos_token,
            "bos": context.bos_token,
        }
        if example.is_conversation:
            user = [m.content for m in example.turns() if m.role == "user"]
            values["instruction"] = values["prompt"] = user[-1] if user else ""
        chosen = prompt_no_input if (prompt_no_input and not example.input) else prompt
        segments = _format(chosen, values, "user", 0)
        segments += _format(response, values, "assistant", 1, content_fields={"output"})
        segments.append(Segment(end.format_map(values), "assistant", "end", 1))
        return segments


def _format(pattern: str, values: dict, role: str, turn: int, content_fields=None) -> list[Segment]:
    segments = []
    try:
        parsed = list(string.Formatter().parse(pattern))
    except ValueError as exc:
        raise UsageError(f"custom template string {pattern!r} is malformed: {exc}") from None
    for literal, field, _spec, _conv in parsed:
        if literal:
            segments.append(Segment(literal, role, "marker", turn))
        if field is not None:
            if field not in values:
                raise UsageError(f"custom template field {{{field}}} is unknown",
                                 hint="fields: " + ", ".join("{%s}" % k for k in values))
            is_content = content_fields is None or field in content_fields
            segments.append(Segment(values[field], role, "content" if is_content else "marker", turn))
    return segments


@hookimpl
def register_templates(register):
    """The built-in prompt templates."""
    register(alpaca)
    register(simple)
    register(human_assistant)
    register(chatml)
    register(chat_template)
    register(plain)
    register(CustomTemplate(), name="custom")
