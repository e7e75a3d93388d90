"""The conformance check of masking strategies."""
from __future__ import annotations

from typing import Any, Sequence

from sftkit.testing.common import call, finite_number, start_check
from sftkit.testing.samples import reference_segments, sample_examples
from sftkit.types import Segment


def check_masking_strategy(
    strategy: Any,
    *,
    segment_lists: Sequence[list[Segment]] | None = None,
    options: dict | None = None,
) -> list[list[float]]:
    """Check a masking strategy returns one finite weight in [0, 1] per segment.

    Also: some segment trains on every sample with a response, the input list is not
    modified, the same weights come back twice, and an empty list gives no weights.
    Returns the weights for each segment list.
    """
    component, problems, bound = start_check("masking_strategies", strategy, options)
    samples = list(segment_lists) if segment_lists is not None else [reference_segments(e) for e in sample_examples()]
    results = []
    for index, segments in enumerate(list(samples) + [[]]):
        before = list(segments)
        ok, weights = call(problems, f"sample {index} ({len(segments)} segments)", bound, segments)
        if not ok:
            continue
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
            problems.add(f"sample {index}: returned {type(weights).__name__}, expected a list of floats")
            continue
        if len(weights) != len(segments):
            problems.add(f"sample {index}: {len(weights)} weights for {len(segments)} segments (one per segment)")
            continue
        bad = [w for w in weights if not finite_number(w) or not 0.0 <= w <= 1.0]
        if bad:
            problems.add(f"sample {index}: weights must be finite numbers in [0, 1], got {bad[0]!r}")
            continue
        if segments != before:
            problems.add(f"sample {index}: the strategy modified the segment list")
        ok, again = call(problems, f"sample {index} a second time", bound, list(segments))
        if ok and list(again) != list(weights):
            problems.add(f"sample {index}: two calls gave different weights (a strategy must be deterministic)")
        has_response = any(s.role == "assistant" and s.part == "content" for s in segments)
        if has_response and not any(w > 0 for w in weights):
            problems.add(f"sample {index}: no segment trains although the sample has a response")
        if segments:
            results.append([float(w) for w in weights])
    problems.check()
    return results
