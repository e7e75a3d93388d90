"""The ``quality`` validator: empty, short or copied outputs, vague instructions, duplicates,
encoding artifacts, degenerate repetition and personal data."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from typing import Annotated, Iterator

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where used: `sftkit plugins` stays light
    import numpy as np
from pydantic import Field

from sftkit import Issue
from sftkit.plugins.validators.text import (PAIR_DETAILS, Permutations, ShingleSize, Similarity, full_text,
                                            near_duplicate_pairs, normalise, prompt_of, rows as count_rows, text_hash)

VAGUE_PHRASES = {"do it", "help", "help me", "continue", "fix this", "fix it", "explain", "write something",
                 "answer", "go on", "do this", "more", "same", "again", "and?", "?", "this", "that"}
# Mojibake: UTF-8 read as Latin-1/cp1252 (Ã©, â€™, Â ), the replacement character, control
# characters, and the "+?" residue of accented letters lost in a bad conversion (Sepp+?l+?).
ENCODING_ARTIFACT = re.compile(
    "[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
    "|\u00c3[\u0080-\u00bf]|\u00c2[\u00a0-\u00bf]|\u00e2\u20ac"
)
PLUS_MOJIBAKE = re.compile(
    r"(?:(?<=[^\W\d_])|(?<=\s))\+[?_](?=[^\W_]|[\s'.,?+]|$)"
    r"|(?<=[^\W\d_])\+\+(?=[^\W\d_])"
)
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(r"(?<![\w.])(?<!\d[\s.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,3}"
                   r"(?![\w.])(?![\s.-]\d)")
DIGIT_RUN = re.compile(r"\d[\d\s().+-]{8,}\d")  # a cheap test before the phone and card patterns
# Card numbers: 13-19 digits, contiguous or in groups of four (Amex: 4-6-5); Luhn-checked below.
CARD = re.compile(r"(?<![\d-])(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2}[ -]\d{1,7}|\d{4}[ -]\d{6}[ -]\d{5})(?![\d-])")


def has_encoding_artifact(text: str) -> bool:
    """Mojibake, U+FFFD or control characters in a text."""
    return bool(ENCODING_ARTIFACT.search(text) or ("+" in text and PLUS_MOJIBAKE.search(text)))


def luhn(digits: str) -> bool:
    """The Luhn checksum of a card number."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def pii_kinds(text: str) -> set[str]:
    """Which kinds of personal data a text seems to hold: email, phone, card."""
    kinds = set()
    if "@" in text and EMAIL.search(text):
        kinds.add("email")
    if not DIGIT_RUN.search(text):
        return kinds
    cards = []
    for match in CARD.finditer(text):
        if luhn(re.sub(r"\D", "", match.group())):
            kinds.add("card")
            cards.append(match.span())
    for match in PHONE.finditer(text):
        if any(start <= match.start() < end for start, end in cards):
            continue
        phone = match.group()
        digits = len(re.sub(r"\D", "", phone))
        if 10 <= digits <= 15 and (phone.startswith(("+", "(")) or len(re.split(r"[\s.-]", phone)) >= 3):
            kinds.add("phone")
            break
    return kinds


def repeat_fraction(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier n-gram (0 for short texts)."""
    words = text.split()
    total = len(words) - n + 1
    if total < 10:
        return 0.0
    grams = {tuple(words[i:i + n]) for i in range(total)}
    return 1 - len(grams) / total


def quality(context,
            min_output_chars: Annotated[int, Field(ge=0, description="outputs shorter than this many characters "
                                                                   "are short_output")] = 3,
            min_instruction_words: Annotated[int, Field(ge=0, description="instructions of fewer words (and no "
                                                                        "input) are vague_instruction")] = 3,
            near_duplicates: Annotated[bool, Field(description="look for near duplicates (MinHash-LSH)")] = True,
            near_dup_threshold: Similarity = 0.8, shingle_size: ShingleSize = 5, num_perm: Permutations = 128,
            max_repeat_fraction: Annotated[float, Field(ge=0, le=1, description="share of repeated word 3-grams "
                                                                               "above which an output is "
                                                                               "repetitive_output (1: off)")] = 0.5,
            pii: Annotated[bool, Field(description="look for personal data (emails, phone and card numbers)")] = True,
            ) -> Iterator[Issue]:
    """Empty/short/copied outputs, vague instructions, exact and near duplicates, mojibake, repetition, PII."""
    import numpy as np
    classification = context.spec.task == "classification"
    spec = context.spec
    constant = spec.instruction is not None and "instruction" not in spec.columns

    def dup_text(example):  # a constant instruction from the spec says nothing about duplicates
        return full_text(replace(example, instruction="") if constant else example)

    flagged: dict[str, list[int]] = defaultdict(list)
    pii_counts: dict[str, int] = defaultdict(int)
    hashes = np.zeros(context.rows, dtype=np.uint64)
    for example in context.examples:
        row = example.row
        response = example.response_text()
        prompt = prompt_of(example)
        stripped = response.strip()
        if not stripped:
            flagged["empty_output"].append(row)
        elif not classification and len(stripped) < min_output_chars:
            flagged["short_output"].append(row)
        if not example.is_conversation and not example.input:
            instruction = normalise(example.instruction)
            if instruction and (instruction in VAGUE_PHRASES or len(instruction.split()) < min_instruction_words):
                flagged["vague_instruction"].append(row)
        if stripped and not classification:
            norm_out, norm_in = normalise(response), normalise(example.input or example.instruction)
            if norm_out == norm_in or (len(norm_in) >= 20 and norm_in in norm_out and len(norm_in) >= 0.8 * len(norm_out)):
                flagged["output_copies_prompt"].append(row)
        texts = f"{prompt}\n{response}"
        if has_encoding_artifact(texts):
            flagged["encoding_artifact"].append(row)
        if max_repeat_fraction < 1 and repeat_fraction(response) > max_repeat_fraction:
            flagged["repetitive_output"].append(row)
        if pii:
            kinds = pii_kinds(texts)
            if kinds:
                flagged["pii"].append(row)
                for kind in kinds:
                    pii_counts[kind] += 1
        hashes[row] = text_hash(dup_text(example)) if (stripped or prompt.strip()) else 0
    yield from _row_issues(flagged, context.rows, min_output_chars, min_instruction_words, max_repeat_fraction,
                           dict(pii_counts))
    groups, first_of_group = _exact_groups(hashes)
    if groups:
        dup_rows = sorted(r for g in groups for r in g)
        yield Issue("quality", "exact_duplicate", "warning",
                    f"exact duplicates: {len(groups)} groups, {count_rows(len(dup_rows))} in all "
                    f"({len(dup_rows) - len(groups)} copies of an earlier row)", dup_rows,
                    {"groups": [g for g in groups[:PAIR_DETAILS]]})
    near = []
    if near_duplicates:
        repeats = set(dup_rows) - first_of_group if groups else set()

        def chunks():
            for chunk in context.examples.chunks():
                yield [(e.row, dup_text(e)) for e in chunk.examples if e.row not in repeats and hashes[e.row]]

        near = near_duplicate_pairs(chunks(), lambda rows: {r: dup_text(context.examples.get(r)) for r in rows},
                                    threshold=near_dup_threshold, num_perm=num_perm, shingle_size=shingle_size)
        if near:
            rows = sorted({r for a, b, _ in near for r in (a, b)})
            yield Issue("quality", "near_duplicate", "warning",
                        f"near duplicates (Jaccard >= {near_dup_threshold} on {shingle_size}-word shingles): "
                        f"{len(near)} pairs, {count_rows(len(rows))} in all", rows,
                        {"pairs": [[a, b, round(s, 3)] for a, b, s in near[:PAIR_DETAILS]]})
    context.stats["quality"] = {
        "rows": context.rows,
        "exact_duplicate_groups": len(groups),
        "near_duplicate_pairs": len(near),
        "flagged": {code: len(rows) for code, rows in flagged.items()},
        "pii": dict(pii_counts),
    }


def _exact_groups(hashes: np.ndarray) -> tuple[list[list[int]], set[int]]:
    """Groups of rows (first row first) sharing a non-zero hash, and the first row of each group."""
    import numpy as np
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    if not len(ordered):
        return [], set()
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(ordered)])
    groups = []
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        if ordered[start] == 0:
            continue
        groups.append(sorted(int(r) for r in order[start:start + size]))
    groups.sort()
    return groups, {g[0] for g in groups}


def _row_issues(flagged, total, min_chars, min_words, max_repeat, pii_counts) -> Iterator[Issue]:
    messages = {
        "empty_output": ("error", "empty output in {n}: it teaches the model to answer nothing"),
        "short_output": ("warning", f"output shorter than {min_chars} characters in {{n}}"),
        "vague_instruction": ("warning", f"vague instruction (under {min_words} words, no input) in {{n}}"),
        "output_copies_prompt": ("warning", "the output copies the prompt in {n}"),
        "encoding_artifact": ("warning", "encoding artifacts (mojibake such as 'Sepp+?l+?' or 'Ã©', U+FFFD "
                                         "replacement characters, control characters) in {n}"),
        "repetitive_output": ("warning", f"degenerate, repetitive output (over {max_repeat:.0%} of word 3-grams "
                                         f"repeated) in {{n}}"),
        "pii": ("info", "what looks like personal data (" + ", ".join(f"{k}: {v}" for k, v in
                                                                     sorted(pii_counts.items())) + ") in {n}"),
    }
    for code, (severity, template) in messages.items():
        rows = flagged.get(code)
        if rows:
            details = {"kinds": pii_counts} if code == "pii" else {}
            yield Issue("quality", code, severity, template.format(n=count_rows(len(rows))), rows, details)


quality.codes = {  # code: (severity, what it means, how to fix); the README table is generated from it
    'empty_output': (
        'error',
        'the response is empty: the row teaches the model to answer nothing',
        'write the response or drop the row',
    ),
    'short_output': (
        'warning',
        'the response has fewer than `min_output_chars` (3) characters (not checked for '
        'classification)',
        'check the rows; lower `quality.min_output_chars` if short answers are right',
    ),
    'vague_instruction': (
        'warning',
        'an instruction without input has fewer than `min_instruction_words` (3) words or is a stock '
        'phrase ("help", "continue")',
        'make the instruction say what is wanted',
    ),
    'exact_duplicate': (
        'warning',
        'rows with the same prompt and response after normalising case, Unicode (NFKC) and whitespace'
        ' (xxh3 hashes); `details.groups` lists them',
        'keep one row per group',
    ),
    'near_duplicate': (
        'warning',
        'pairs of rows with Jaccard similarity >= `near_dup_threshold` (0.8) on word 5-gram shingles '
        '(character 5-grams for CJK), found with MinHash-LSH (`rensa`) and confirmed by exact Jaccard'
        ' (at most 64 candidates a row); `details.pairs`',
        'drop or rewrite the copies; tune `quality.near_dup_threshold`',
    ),
    'output_copies_prompt': (
        'warning',
        'the response repeats the instruction or input (or mostly consists of it)',
        'write a real response',
    ),
    'encoding_artifact': (
        'warning',
        'mojibake (`Sepp+?l+?`, `Ã©`, `â€™`), U+FFFD replacement characters (from bytes that were not'
        ' UTF-8) or control characters',
        're-export the source as UTF-8, or repair the text (e.g. with ftfy)',
    ),
    'repetitive_output': (
        'warning',
        'a degenerate response: more than `max_repeat_fraction` (50%) of its word 3-grams repeat',
        'drop or regenerate the rows',
    ),
    'pii': (
        'info',
        'e-mail addresses, phone numbers or card numbers (Luhn-checked) appear; `details.kinds` '
        'counts them',
        'remove or mask personal data you may not train on',
    ),
}
