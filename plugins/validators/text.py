"""Text helpers shared by the validators: normalisation, hashing, shingles, MinHash-LSH.

Exact duplicates: xxh3 of normalised text (casefolded, NFKC for non-ASCII, whitespace
collapsed). Near duplicates: MinHash-LSH (``rensa``, a Rust MinHash: about 10x faster than
pure-Python ``datasketch`` on 100K rows) on word 5-gram shingles (character 5-grams for CJK
text), every candidate pair confirmed by its true Jaccard similarity, as datatrove and
data-juicer do.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Callable, Iterable, Iterator

import xxhash
from pydantic import Field

from sftkit import Example

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
PAIR_DETAILS = 50  # pairs listed in an issue's details
MAX_PERMUTATIONS = 4096  # MinHash permutations: 128 is the usual choice; more costs memory per row, not accuracy

# The option types the near-duplicate validators share (quality, leakage): checked by value before any work.
Similarity = Annotated[float, Field(gt=0, le=1, description="Jaccard similarity of shingles from which two texts "
                                                             "are near duplicates")]
ShingleSize = Annotated[int, Field(ge=1, le=64, description="words per shingle (characters for CJK text)")]
Permutations = Annotated[int, Field(ge=1, le=MAX_PERMUTATIONS, description="MinHash permutations per text "
                                                                           "(more: finer similarity, more memory)")]
MAX_CANDIDATES = 64  # LSH candidates confirmed per row: bounds the work on data full of look-alike rows


def rows(n: int) -> str:
    """``1 row`` / ``2 rows``: issue messages say how many rows, in words that agree."""
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def normalise(text: str) -> str:
    """Casefolded, NFKC (for non-ASCII), whitespace collapsed."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.casefold().split())


def text_hash(text: str) -> int:
    """A 64-bit hash of normalised text."""
    return xxhash.xxh3_64_intdigest(normalise(text).encode("utf-8", "surrogatepass"))


def prompt_of(example: Example) -> str:
    """Everything the model is given: system, instruction and input, or the turns before the last answer."""
    if example.is_conversation:
        turns = example.turns()
        last = max((i for i, m in enumerate(turns) if m.role == "assistant"), default=len(turns))
        return "\n".join(f"{m.role}: {m.content}" for m in turns[:last])
    return f"{example.system}\n{example.prompt_text()}" if example.system else example.prompt_text()


def full_text(example: Example) -> str:
    """Prompt and response together (what duplicates are judged on)."""
    return f"{prompt_of(example)}\n\x1f\n{example.response_text()}"


def content_fields(example: Example) -> Iterator[tuple[str, str]]:
    """(field name, text) for every text field of a row that came from data."""
    if example.is_conversation:
        for index, message in enumerate(example.messages or []):
            yield f"messages[{index}].{message.role}", message.content
        return
    for name in ("system", "instruction", "input", "output"):
        value = getattr(example, name)
        if value:
            yield name, value


def shingles(text: str, size: int = 5) -> set[str]:
    """Word ``size``-grams of normalised text; character ``size``-grams for CJK text."""
    norm = normalise(text)
    if len(CJK.findall(norm)) * 3 > len(norm):
        chars = norm.replace(" ", "")
        return {chars[i:i + size] for i in range(max(1, len(chars) - size + 1))} if chars else set()
    words = norm.split()
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def lsh_bands(threshold: float, num_perm: int) -> int:
    """Bands for an LSH whose S-curve rises a little below ``threshold`` (recall first; pairs are confirmed)."""
    target = max(0.05, threshold - 0.1)
    options = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    return min(options, key=lambda b: abs((1 / b) ** (b / num_perm) - target))


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _sketch(sets: list[set[str]], num_perm: int, seed: int = 42) -> list:
    from rensa import RMinHash

    return RMinHash.from_token_sets([sorted(s) for s in sets], num_perm, seed)


def near_duplicate_pairs(
    chunks: Iterable[list[tuple[int, str]]],
    text_of: Callable[[list[int]], dict[int, str]],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 5,
) -> list[tuple[int, int, float]]:
    """Pairs (earlier row, row, Jaccard) of near-duplicate texts, Jaccard >= threshold.

    ``chunks`` yields [(row, text)] in row order; ``text_of(rows)`` returns the text of earlier
    rows for confirming candidates across chunks. Rows already linked are not compared again.
    """
    from rensa import RMinHashLSH

    lsh = RMinHashLSH(threshold, num_perm, lsh_bands(threshold, num_perm))
    links = _UnionFind()
    pairs: list[tuple[int, int, float]] = []
    deferred: list[tuple[int, int]] = []
    for chunk in chunks:
        sets = {row: shingles(text, shingle_size) for row, text in chunk}
        rows = [row for row, _ in chunk if sets[row]]
        for row, sketch in zip(rows, _sketch([sets[r] for r in rows], num_perm)):
            for other in sorted(lsh.query(sketch))[:MAX_CANDIDATES]:
                if other in sets:
                    if links.find(other) != links.find(row):
                        score = jaccard(sets[other], sets[row])
                        if score >= threshold:
                            pairs.append((other, row, score))
                            links.union(other, row)
                else:
                    deferred.append((other, row))
            lsh.insert(row, sketch)
    if deferred:
        texts = text_of(sorted({r for pair in deferred for r in pair}))
        cache: dict[int, set[str]] = {}
        for a, b in sorted(deferred):
            if links.find(a) == links.find(b):
                continue
            sa = cache.setdefault(a, shingles(texts[a], shingle_size))
            sb = cache.setdefault(b, shingles(texts[b], shingle_size))
            score = jaccard(sa, sb)
            if score >= threshold:
                pairs.append((a, b, score))
                links.union(a, b)
    return sorted(pairs)


def cross_near_duplicates(
    train: Iterable[list[tuple[int, str]]],
    queries: Iterable[list[tuple[int, str]]],
    text_of: Callable[[list[int]], dict[int, str]],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 5,
) -> list[tuple[int, int, float]]:
    """Pairs (train row, query row, Jaccard) where a query text nearly duplicates a train text."""
    from rensa import RMinHashLSH

    lsh = RMinHashLSH(threshold, num_perm, lsh_bands(threshold, num_perm))
    for chunk in train:
        sets = [shingles(text, shingle_size) for _, text in chunk]
        kept = [(row, s) for (row, _), s in zip(chunk, sets) if s]
        for (row, _), sketch in zip(kept, _sketch([s for _, s in kept], num_perm)):
            lsh.insert(row, sketch)
    candidates: list[tuple[int, int, set[str]]] = []
    for chunk in queries:
        sets = [shingles(text, shingle_size) for _, text in chunk]
        kept = [(row, s) for (row, _), s in zip(chunk, sets) if s]
        for (row, s), sketch in zip(kept, _sketch([s for _, s in kept], num_perm)):
            candidates += [(other, row, s) for other in sorted(lsh.query(sketch))[:MAX_CANDIDATES]]
    if not candidates:
        return []
    texts = text_of(sorted({c[0] for c in candidates}))
    out = []
    for train_row, row, s in candidates:
        score = jaccard(shingles(texts[train_row], shingle_size), s)
        if score >= threshold:
            out.append((train_row, row, score))
    return sorted(out)
