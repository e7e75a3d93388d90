"""The ``leakage`` validator: prompts shared by the training data and the eval data."""
from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Iterator

from pydantic import Field

from sftkit import Issue
from sftkit.plugins.validators.text import (PAIR_DETAILS, Permutations, ShingleSize, Similarity, cross_near_duplicates,
                                            prompt_of, rows as count_rows, text_hash)


def leakage(context, near_dup_threshold: Similarity = 0.8, shingle_size: ShingleSize = 5, num_perm: Permutations = 128,
            near_duplicates: Annotated[bool, Field(description="also look for near-duplicate prompts "
                                                                "(MinHash-LSH)")] = True) -> Iterator[Issue]:
    """Eval prompts that also appear in the training data, exactly or nearly (needs --eval-data)."""
    evals = context.eval_examples
    if evals is None:
        context.stats["leakage"] = {"skipped": "no eval data (--eval-data)"}
        return
    eval_hashes: dict[int, list[int]] = defaultdict(list)
    for example in evals:
        prompt = prompt_of(example)
        if prompt.strip():
            eval_hashes[text_hash(prompt)].append(example.row)
    exact: dict[int, list[int]] = {}
    for example in context.examples:
        prompt = prompt_of(example)
        if prompt.strip():
            found = eval_hashes.get(text_hash(prompt))
            if found:
                exact[example.row] = found
    if exact:
        eval_rows = sorted({r for rows in exact.values() for r in rows})
        yield Issue("leakage", "eval_overlap", "error",
                    f"prompts shared exactly by {count_rows(len(exact))} of the training data and "
                    f"{count_rows(len(eval_rows))} of the eval data: eval scores on them measure memorisation", sorted(exact),
                    {"match": "exact", "eval_rows": eval_rows,
                     "pairs": [[t, e[0]] for t, e in sorted(exact.items())[:PAIR_DETAILS]]})
    near = []
    if near_duplicates:
        exact_eval = {r for rows in exact.values() for r in rows}

        def chunks(store, skip):
            for chunk in store.chunks():
                yield [(e.row, prompt_of(e)) for e in chunk.examples if e.row not in skip]

        near = cross_near_duplicates(chunks(context.examples, set(exact)), chunks(evals, exact_eval),
                                     lambda rows: {r: prompt_of(context.examples.get(r)) for r in rows},
                                     threshold=near_dup_threshold, num_perm=num_perm, shingle_size=shingle_size)
        if near:
            train_rows = sorted({t for t, _, _ in near})
            eval_rows = sorted({e for _, e, _ in near})
            yield Issue("leakage", "eval_overlap", "warning",
                        f"near-duplicate prompts (Jaccard >= {near_dup_threshold}) in {count_rows(len(train_rows))} of "
                        f"the training data and {count_rows(len(eval_rows))} of the eval data", train_rows,
                        {"match": "near", "eval_rows": eval_rows,
                         "pairs": [[t, e, round(s, 3)] for t, e, s in near[:PAIR_DETAILS]]})
    context.stats["leakage"] = {"eval_rows": len(evals), "exact_overlap_train_rows": len(exact),
                                "near_overlap_pairs": len(near)}


leakage.codes = {  # code: (severity, what it means, how to fix); the README table is generated from it
    'eval_overlap': (
        'error (warning for near duplicates)',
        'with `--eval-data`: training rows whose prompt is identical (error) or a near duplicate '
        '(warning, Jaccard >= 0.8) of an eval prompt; `details.eval_rows` lists the eval rows',
        'remove the overlapping rows from the training data',
    ),
}
