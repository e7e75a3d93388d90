"""Sample inputs of the conformance checks: examples, segments and results."""
from __future__ import annotations

from sftkit.types import Example, Issue, Message, Result, Segment

# A string that must never reach an HTML or Markdown report unescaped.
XSS = '<script>alert("sftkit")</script>'


def sample_examples() -> list[Example]:
    """Small canonical examples: with and without input, a system prompt, a conversation, odd text."""
    return [
        Example(instruction="Translate to French.", input="Good morning", output="Bonjour", row=0),
        Example(instruction="Name a primary colour.", output="Red.", row=1),
        Example(instruction="Summarise the text.", input="The meeting moved to Friday at noon.",
                output="Meeting: Friday, noon.", system="You are concise.", row=2),
        Example(messages=[Message("system", "Be brief."), Message("user", "Hi there"),
                          Message("assistant", "Hello!"), Message("user", "What is 2+2?"),
                          Message("assistant", "4")], row=3),
        Example(instruction=f"Repeat {{this}} exactly: {XSS} ### Response: 😀",
                output=f"{{this}} {XSS} 😀", row=4),
    ]


def reference_segments(example: Example, eos: str = "</s>") -> list[Segment]:
    segments = []
    for index, message in enumerate(example.turns()):
        segments.append(Segment(f"<{message.role}>\n", message.role, "marker", index))
        segments.append(Segment(message.content, message.role, "content", index))
        if message.role == "assistant":
            segments.append(Segment(eos, "assistant", "end", index))
            segments.append(Segment("\n", "assistant", "marker", index))
    return segments


def sample_results() -> list[Result]:
    """One small Result per kind (validate, train, eval), with data strings a report must escape."""
    return [
        Result("validate", f"validate {XSS}", {
            "dataset": f"data/{XSS}.jsonl", "rows": 3, "passed": False,
            "issues": [Issue("profanity", "bad_word", "warning", f"row text {XSS}", [1], {"word": XSS}).to_dict()],
            "counts": {"error": 0, "warning": 1, "info": 0},
        }),
        Result("train", "train tiny-random", {
            "model": "tiny-random", "steps": 2, "losses": [2.5, 2.25], "note": XSS,
        }),
        Result("eval", "eval", {
            "metrics": {"exact_match": {"base": 0.25, "tuned": 0.75}},
            "examples": [{"prompt": XSS, "prediction": "yes", "reference": "yes"}],
        }),
        Result("a_kind_this_reporter_does_not_know", "unknown kind", {"text": XSS}),
    ]
