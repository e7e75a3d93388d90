"""The ``consistency`` validator: template markers inside data, conflicting answers, label
spellings, labels outside the spec, and records of mixed shapes."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Annotated, Iterator

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where used: `sftkit plugins` stays light
    import numpy as np
from pydantic import Field

from sftkit import Issue
from sftkit.plugins.validators.text import PAIR_DETAILS, content_fields, prompt_of, rows as count_rows, text_hash

# Delimiters of common templates: inside a field they break masking and inference.
KNOWN_MARKERS = ("### Instruction:", "### Input:", "### Response:", "<|im_start|>", "<|im_end|>",
                 "###instruction###", "###response###", "###human###", "###assistant###", "[INST]", "[/INST]",
                 "<|start_header_id|>", "<|eot_id|>", "<|endoftext|>")
MAX_LABELS = 1000  # more distinct values than this is free text, not labels


def label_key(label: str) -> str:
    """A label's spelling-independent key: casefolded, punctuation and spaces removed."""
    return re.sub(r"[\W_]+", "", label.casefold())


def canonical_label(raw: str, known: list[str]) -> str | None:
    """The known label that ``raw`` is a variant of (case, spaces, punctuation, abbreviation), or None."""
    key = label_key(raw)
    if not key:
        return None
    for label in known:
        if label_key(label) == key:
            return label
    prefixed = [label for label in known if len(key) >= 3 and label_key(label).startswith(key)]
    return prefixed[0] if len(prefixed) == 1 else None


def consistency(context, find_markers: Annotated[bool, Field(description="look for template delimiters of common "
                                                                         "templates inside the data")] = True,
                ) -> Iterator[Issue]:
    """Template markers in data, conflicting labels, label variants, unknown labels, mixed formats."""
    import numpy as np
    spec = context.spec
    # Markers are declared as they appear in context (" ASSISTANT:"); inside a field the delimiter
    # itself is the problem, wherever it stands, so the content check looks for it stripped.
    markers = {m.strip() for m in context.markers if m.strip()}
    tokenizer = context.tokenizer
    if tokenizer is not None:
        markers |= {t for t in (tokenizer.eos_token, tokenizer.bos_token) if t}
    other_markers = [m for m in KNOWN_MARKERS if m not in markers]
    # A field without any marker's first character holds no marker: one regex search skips most fields.
    first_chars = re.compile("[" + re.escape("".join(sorted({m[0] for m in (*markers, *other_markers)}))) + "]")
    marker_rows: dict[str, list[int]] = defaultdict(list)
    other_rows: dict[str, list[int]] = defaultdict(list)
    prompt_hashes = np.zeros(context.rows, dtype=np.uint64)
    answer_hashes = np.zeros(context.rows, dtype=np.uint64)
    labels: dict[str, list[int]] = defaultdict(list)
    shapes: dict[str, list[int]] = defaultdict(list)
    for chunk in context.examples.chunks():
        for example, shape in zip(chunk.examples, chunk.shapes):
            row = example.row
            shapes[shape].append(row)
            if find_markers:
                for _name, text in content_fields(example):
                    if first_chars.search(text):
                        for marker in markers:
                            if marker in text:
                                marker_rows[marker].append(row)
                        for marker in other_markers:
                            if marker in text:
                                other_rows[marker].append(row)
            prompt = prompt_of(example)
            if prompt.strip():
                prompt_hashes[row] = text_hash(prompt)
                answer_hashes[row] = text_hash(example.response_text())
            if example.label is not None and len(labels) <= MAX_LABELS:
                labels[example.label].append(row)
    for marker, rows in sorted(marker_rows.items()):
        rows = sorted(set(rows))
        yield Issue("consistency", "template_marker_in_content", "error",
                    f"{marker!r}, a delimiter of the template or tokenizer in use, appears in {count_rows(len(rows))}: "
                    f"it corrupts the prompt structure and teaches the model to emit it", rows, {"marker": marker})
    for marker, rows in sorted(other_rows.items()):
        rows = sorted(set(rows))
        yield Issue("consistency", "template_marker_in_content", "warning",
                    f"{marker!r}, a delimiter of another prompt template, appears in {count_rows(len(rows))}", rows,
                    {"marker": marker})
    yield from _conflicts(prompt_hashes, answer_hashes, spec.task == "classification")
    yield from _labels(labels, spec.labels, context.rows)
    yield from _mixed(shapes)
    context.stats["consistency"] = {
        "shapes": {shape: len(rows) for shape, rows in shapes.items()},
        "labels": {label: len(rows) for label, rows in labels.items()} if len(labels) <= MAX_LABELS else {},
    }


def _conflicts(prompts: np.ndarray, answers: np.ndarray, classification: bool) -> Iterator[Issue]:
    import numpy as np
    order = np.lexsort((answers, prompts))
    p, a = prompts[order], answers[order]
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    groups = []
    for start, end in zip(starts, ends):
        if end - start > 1 and p[start] != 0 and a[start] != a[end - 1]:
            groups.append(sorted(int(r) for r in order[start:end]))
    if not groups:
        return
    groups.sort()
    rows = sorted(r for g in groups for r in g)
    what = "labels" if classification else "outputs"
    yield Issue("consistency", "conflicting_labels", "error" if classification else "warning",
                f"the same prompt with different {what}: {len(groups)} groups, {count_rows(len(rows))}", rows,
                {"groups": groups[:PAIR_DETAILS]})


def _labels(labels: dict[str, list[int]], known: list[str], total: int) -> Iterator[Issue]:
    if not labels or len(labels) > MAX_LABELS:
        return
    counts = Counter({label: len(rows) for label, rows in labels.items()})
    rank = {label: index for index, (label, _) in enumerate(counts.most_common())}
    variants: dict[str, list[str]] = defaultdict(list)
    unknown: list[str] = []
    for label in counts:
        if known:
            if label in known:
                continue
            target = canonical_label(label, known)
        else:  # no labels in the spec: a rarer spelling is a variant of a more common one
            target = canonical_label(label, [other for other in rank if rank[other] < rank[label]])
            if target is None:
                continue
        if target is not None:
            variants[target].append(label)
        else:
            unknown.append(label)
    if variants:
        rows = sorted(r for spellings in variants.values() for s in spellings for r in labels[s])
        described = "; ".join(f"{target!r} also written {', '.join(repr(s) for s in spellings)}"
                              for target, spellings in sorted(variants.items()))
        yield Issue("consistency", "label_variants", "warning",
                    f"variant spellings of labels in {count_rows(len(rows))}: {described}", rows,
                    {"variants": {k: sorted(v) for k, v in variants.items()}})
    if unknown:
        rows = sorted(r for label in unknown for r in labels[label])
        shown = ", ".join(repr(label) for label in sorted(unknown)[:10])
        yield Issue("consistency", "unknown_label", "error",
                    f"labels outside the spec's labels {known} in {count_rows(len(rows))}: {shown}", rows,
                    {"labels": sorted(unknown)[:100]})


def _mixed(shapes: dict[str, list[int]]) -> Iterator[Issue]:
    if len(shapes) <= 1:
        return
    main = max(shapes, key=lambda k: len(shapes[k]))
    rows = sorted(r for shape, rs in shapes.items() if shape != main for r in rs)
    counts = {shape: len(rs) for shape, rs in sorted(shapes.items(), key=lambda kv: -len(kv[1]))[:20]}
    yield Issue("consistency", "mixed_formats", "warning",
                f"{len(shapes)} different record layouts (keys, turn keys, role names): "
                f"{count_rows(len(rows))} outside the most common one ({main!r})", rows, {"layouts": counts})


consistency.codes = {  # code: (severity, what it means, how to fix); the README table is generated from it
    'template_marker_in_content': (
        "error (warning for other templates' markers)",
        'a field contains a delimiter of the template or tokenizer in use (`### Response:`, '
        '`<|im_end|>`, the EOS text): it corrupts the prompt structure and teaches the model to emit '
        'it; markers of other common templates are a warning',
        'remove the markers from the data, or use a template whose delimiters do not occur',
    ),
    'conflicting_labels': (
        'error (warning for generation tasks)',
        'the same prompt appears with different responses: for classification the labels contradict '
        'each other; for open generation it may be intended',
        'decide the right label and fix or drop the others',
    ),
    'label_variants': (
        'warning',
        'one label written several ways (`Positive`, `positive `, `pos`): case, spaces, punctuation '
        'or a unique abbreviation of a spec label (or of a more common label when the spec lists '
        'none)',
        'normalise the labels to one spelling',
    ),
    'unknown_label': (
        'error',
        "a label is not in the spec's `labels` and is no variant of one",
        'fix the label or add it to the spec',
    ),
    'mixed_formats': (
        'warning',
        'records have different key sets, or conversations different turn keys (role/content versus '
        'from/value) or role names (user/assistant versus human/gpt; a system turn or not does not '
        'count); rows differing from the most common layout are listed',
        'convert all records to one layout',
    ),
}
