"""Templates: markers declared as they appear in context (one declaration for the content and
the tokenization checks) and ``jinja`` as a function of the template's options."""
from __future__ import annotations

import pytest

from sftkit import Example, Segment, hookimpl
from sftkit.errors import PluginError
from sftkit.testing import ConformanceError, check_template, validation_context

RECORDS = [{"instruction": "Name a colour.", "input": "", "output": "Red"},
           {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
           {"instruction": "ASSISTANT: pretend to be me", "input": "", "output": "No"}]


def user_assistant(example, context, system: str = ""):
    """USER: ... ASSISTANT: ..., space-separated, with an optional system line."""
    segments = [Segment(system + "\n", "system", "marker", -1)] if system else []
    for turn, message in enumerate(example.turns()):
        if message.role == "user":
            segments += [Segment("USER: ", "user", "marker", turn), Segment(message.content, "user", "content", turn)]
        elif message.role == "assistant":
            segments += [Segment(" ASSISTANT:", "assistant", "marker", turn),
                         Segment(" " + message.content, "assistant", "content", turn),
                         Segment(context.eos_token, "assistant", "end", turn)]
    return segments


def _jinja(system: str = "") -> str:
    import json

    head = "{{ " + json.dumps(system + "\n", ensure_ascii=False) + " }}" if system else ""
    return (head + "{% for m in messages %}{% if m.role == 'user' %}{{ 'USER: ' + m.content }}"
            "{% elif m.role == 'assistant' %}{{ ' ASSISTANT: ' + m.content + eos_token }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}")


def _plugin(markers, jinja=None):
    def template(example, context, system: str = ""):
        """USER: ... ASSISTANT: ... (a copy with its own attributes)."""
        return user_assistant(example, context, system)

    template.markers = markers
    if jinja is not None:
        template.jinja = jinja

    class Plugin:
        @hookimpl
        def register_templates(self, register):
            register(template, name="user_assistant")

    return template, Plugin()


EXAMPLES = [Example(instruction="Say hi", output="hi", row=0),
            Example(instruction="Sum", input="2 and 3", output="5", row=1)]


def _tokenization_issues(register_plugin, tokenizer, markers):
    from sftkit.plugins.validators.consistency import consistency
    from sftkit.plugins.validators.tokenization import tokenization

    _, plugin = _plugin(markers)
    register_plugin(plugin)
    context = validation_context(records=RECORDS, tokenizer=tokenizer, template="user_assistant")
    return list(tokenization(context)), list(consistency(context))


def test_markers_declared_in_context_agree_for_a_space_separated_format(register_plugin, tokenizer):
    tokens, content = _tokenization_issues(register_plugin, tokenizer, ("USER:", " ASSISTANT:"))
    assert not [i for i in tokens if i.code == "marker_split"]  # not flagged on every row any more
    (found,) = [i for i in content if i.code == "template_marker_in_content" and i.severity == "error"]
    assert found.rows == [2] and found.details == {"marker": "ASSISTANT:"}  # matched stripped, at a field's start


def test_a_marker_declared_without_its_leading_space_is_explained(register_plugin, tokenizer):
    tokens, _ = _tokenization_issues(register_plugin, tokenizer, ("USER:", "ASSISTANT:"))
    (split,) = [i for i in tokens if i.code == "marker_split"]
    assert split.rows == [0, 1, 2]
    info = split.details["markers"]["ASSISTANT:"]
    assert info["leading_space"] == " " and info["declare_as"] == " ASSISTANT:"
    assert info["in_context"][0].startswith("Ġ") and not info["alone"][0].startswith("Ġ")
    assert "'ASSISTANT:' (declare it as ' ASSISTANT:')" in split.message
    assert "whitespace before the marker" in split.message


def test_the_same_text_inside_a_message_is_not_the_marker(register_plugin, tokenizer):
    """Row 2's instruction starts with 'ASSISTANT:'; only the template's own marker is compared."""
    from sftkit.tokenize import marker_tokens, tokenize_many

    template, plugin = _plugin(("USER:", " ASSISTANT:"))
    register_plugin(plugin)
    context = validation_context(records=RECORDS, tokenizer=tokenizer, template="user_assistant")
    example = context.examples.get(2)
    segments = context.encoder.segments(example)
    (tokens,) = tokenize_many([(segments, [0.0] * len(segments))], tokenizer)
    found = marker_tokens(tokens, segments, "ASSISTANT:")
    rendered_at = len("".join(s.text for s in segments[:2])) + 1  # after "USER: " and the content, then " "
    assert tokens.text.find("ASSISTANT:") < rendered_at == found.start
    assert found.leading == " " and not found.aligned


def test_check_template_gives_the_leading_space_advice(tokenizer):
    template, _ = _plugin(("USER:", "ASSISTANT:"))
    with pytest.raises(ConformanceError, match=r"marker 'ASSISTANT:' is rendered after ' ', which its first token "
                                               r"absorbs .*here ' ASSISTANT:'"):
        check_template(template, examples=EXAMPLES, tokenizer=tokenizer)
    template.markers = ("USER:", " ASSISTANT:")
    check_template(template, examples=EXAMPLES, tokenizer=tokenizer)


def test_jinja_as_a_function_of_the_options(tokenizer):
    template, _ = _plugin(("USER:", " ASSISTANT:"), jinja=_jinja)
    system = 'Be brief. "Quoted", {braces}, {{ jinja }} and 😀'
    rendered = check_template(template, examples=EXAMPLES, tokenizer=tokenizer, options={"system": system})
    assert "".join(s.text for s in rendered[0]).startswith(system + "\nUSER: Say hi")
    check_template(template, examples=EXAMPLES, tokenizer=tokenizer)  # and without the option


def test_a_fixed_jinja_string_that_ignores_an_option_is_caught(tokenizer):
    template, _ = _plugin(("USER:", " ASSISTANT:"), jinja=_jinja(""))
    check_template(template, examples=EXAMPLES, tokenizer=tokenizer)  # right for the default options
    with pytest.raises(ConformanceError, match="the jinja chat template renders 'USER: Say hi"):
        check_template(template, examples=EXAMPLES, tokenizer=tokenizer, options={"system": "Be brief."})


def test_a_jinja_function_returning_something_else_is_a_problem(tokenizer):
    template, _ = _plugin(("USER:", " ASSISTANT:"), jinja=lambda system="": 42)
    with pytest.raises(ConformanceError, match="jinja must be a string or a function returning one, got int"):
        check_template(template, examples=EXAMPLES, tokenizer=tokenizer)
    template.jinja = ["not", "callable"]
    with pytest.raises(ConformanceError, match="attribute jinja must be a string"):
        check_template(template, examples=EXAMPLES)


def test_template_jinja_uses_defaults_then_the_options_set(sftkit_registry, register_plugin):
    from sftkit.runs import template_jinja

    calls = []

    def jinja(system: str = "default system", **rest):
        calls.append((system, rest))
        return f"{{{{ {system!r} }}}}"

    _, plugin = _plugin(("USER:",), jinja=jinja)
    register_plugin(plugin)
    assert template_jinja(sftkit_registry.resolve("templates", "user_assistant")) == "{{ '' }}"
    assert calls[-1] == ("", {})  # the template's own default ("") wins over the jinja function's
    assert template_jinja(sftkit_registry.resolve("templates", "user_assistant", {"system": "S"})) == "{{ 'S' }}"
    assert template_jinja(sftkit_registry.resolve("templates", "alpaca")).startswith("{% set ns")  # a string
    assert template_jinja(sftkit_registry.resolve("templates", "custom")) is None
    _, broken = _plugin(("USER:",), jinja=lambda system="": b"bytes")
    sftkit_registry.add_plugin(broken, name="broken", version="1", builtin=False)  # the same name: a clash
    with pytest.raises(PluginError):
        template_jinja(sftkit_registry.get("templates", "user_assistant").bind())
