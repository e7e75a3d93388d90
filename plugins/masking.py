"""Built-in masking strategies: completion_only, full, assistant_only, last_turn, prompt_weighted.

Each returns one loss weight per segment; 0 means masked (label -100).
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from sftkit import Segment, hookimpl


def _last_assistant_turn(segments: list[Segment]) -> int | None:
    turns = [s.turn for s in segments if s.role == "assistant" and s.part in ("content", "end")]
    return max(turns) if turns else None


def completion_only(segments: list[Segment]) -> list[float]:
    """Train only the final response and its end token (the default)."""
    last = _last_assistant_turn(segments)
    return [1.0 if s.is_response and s.turn == last else 0.0 for s in segments]


completion_only.default = True  # the strategy used when none is chosen


def full(segments: list[Segment]) -> list[float]:
    """Train every token, prompt included (the unmasked baseline)."""
    return [1.0] * len(segments)


full.encoder_decoder = False  # an encoder-decoder's prompt is its encoder input, which never trains


def assistant_only(segments: list[Segment]) -> list[float]:
    """Train every assistant turn of a conversation (content and end token)."""
    return [1.0 if s.is_response else 0.0 for s in segments]


def last_turn(segments: list[Segment]) -> list[float]:
    """Train only the final assistant turn, its role header included."""
    last = _last_assistant_turn(segments)
    return [1.0 if s.role == "assistant" and s.turn == last else 0.0 for s in segments]


def prompt_weighted(segments: list[Segment],
                    prompt_weight: Annotated[float, Field(ge=0, le=1, description="the loss weight of prompt "
                                                                                  "tokens (responses: 1)")] = 0.1,
                    ) -> list[float]:
    """Train responses with weight 1 and prompt tokens with a small weight (default 0.1)."""
    return [1.0 if s.is_response else prompt_weight for s in segments]


prompt_weighted.encoder_decoder = False  # an encoder-decoder's prompt is its encoder input, which never trains


@hookimpl
def register_masking_strategies(register):
    """The built-in masking strategies."""
    register(completion_only)
    register(full)
    register(assistant_only)
    register(last_turn)
    register(prompt_weighted)
