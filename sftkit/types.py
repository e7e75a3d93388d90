"""The small data types that flow along sftkit's data path.

file --loader--> records (dicts) --spec--> Example --template--> [Segment]
     --masking--> [weight per segment] --tokenize--> TokenizedExample
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    """One turn of a conversation."""

    role: str  # "system", "user" or "assistant"
    content: str


@dataclass
class Example:
    """A canonical training example, whatever the source format was.

    Single-turn data fills ``instruction``, ``input`` and ``output``; conversations fill
    ``messages``. ``turns()`` gives the conversation view of either, so a template can work on
    one shape. ``row`` is the 0-based index of the source record.
    """

    instruction: str = ""
    input: str = ""
    output: str = ""
    system: str = ""
    messages: list[Message] | None = None
    label: str | None = None
    task: str | None = None
    row: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_conversation(self) -> bool:
        return self.messages is not None

    def prompt_text(self) -> str:
        """The user-side text of a single-turn example: ``instruction + "\\n\\n" + input``; the
        instruction alone when there is no input, the input alone when there is no instruction."""
        if self.input:
            return f"{self.instruction}\n\n{self.input}" if self.instruction else self.input
        return self.instruction

    def turns(self) -> list[Message]:
        """The example as a list of messages: a conversation's own messages; for single-turn data
        a system message (if ``system`` is set), the user message ``prompt_text()`` (instruction
        and input joined by a blank line) and the assistant message ``output``."""
        if self.messages is not None:
            return list(self.messages)
        turns = [Message("system", self.system)] if self.system else []
        turns.append(Message("user", self.prompt_text()))
        turns.append(Message("assistant", self.output))
        return turns

    def response_text(self) -> str:
        """The final assistant message: what a completion-only model learns to write."""
        for message in reversed(self.turns()):
            if message.role == "assistant":
                return message.content
        return ""


@dataclass(frozen=True)
class Segment:
    """A run of rendered text with the role it belongs to.

    ``role``: "system", "user" or "assistant" (whose turn the text is part of).
    ``part``: "marker" (template scaffolding such as ``### Response:``), "content" (the
    message text itself) or "end" (the end-of-turn / EOS text that closes an assistant turn).
    ``turn``: the index of the message in ``Example.turns()``; -1 for text before any turn.
    """

    text: str
    role: str
    part: str = "content"
    turn: int = -1

    @property
    def is_response(self) -> bool:
        """Assistant content or its end token: what the model writes."""
        return self.role == "assistant" and self.part in ("content", "end")


@dataclass
class RenderContext:
    """What a template may need besides the example: the tokenizer's special tokens."""

    eos_token: str = ""
    bos_token: str = ""
    tokenizer: Any = None


@dataclass
class TokenizedExample:
    """Token ids with labels (-100 where masked) and per-token loss weights.

    For an encoder-decoder model (``source_length`` set) the first ``source_length`` tokens are
    the encoder input (never trained) and the rest the decoder target (the final response and its
    end token); ``text`` and ``offsets`` cover both sides, source first. Each side is truncated
    on its own: ``trained_tokens_lost`` counts target tokens cut, ``source_tokens_lost`` source
    tokens cut.
    """

    input_ids: list[int]
    labels: list[int]
    weights: list[float]
    segment_index: list[int]  # for each token, the segment it starts in
    offsets: list[tuple[int, int]]
    text: str
    length_before_truncation: int
    trained_tokens_lost: int = 0  # trained tokens cut off by max_length
    source_length: int | None = None  # encoder-decoder: how many leading tokens are the encoder input
    source_tokens_lost: int = 0  # encoder-decoder: source tokens cut off by max_source_length

    @property
    def is_encoder_decoder(self) -> bool:
        return self.source_length is not None

    @property
    def truncated(self) -> bool:
        return self.length_before_truncation > len(self.input_ids)

    @property
    def num_trained(self) -> int:
        return sum(1 for label in self.labels if label != -100)


@dataclass
class Issue:
    """One finding of a validator. ``rows`` are 0-based indices of the records concerned."""

    validator: str
    code: str
    severity: str  # "error", "warning" or "info"
    message: str
    rows: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "validator": self.validator,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "rows": list(self.rows),
        }
        if self.details:
            out["details"] = self.details
        return out


SEVERITIES = ("error", "warning", "info")


@dataclass
class Result:
    """What a command produced, handed to reporters. ``kind``: validate, train or eval."""

    kind: str
    title: str
    data: dict[str, Any]
