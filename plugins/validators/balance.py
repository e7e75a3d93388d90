"""The ``balance`` validator: class and task imbalance, length outliers, and length statistics."""
from __future__ import annotations

from collections import Counter
from typing import Annotated, Iterator

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads where used: `sftkit plugins` stays light
    import numpy as np
from pydantic import Field

from sftkit import Issue
from sftkit.plugins.validators.text import prompt_of, rows as count_rows


def _percentiles(values: np.ndarray) -> dict[str, float]:
    import numpy as np
    if not len(values):
        return {}
    p50, p95 = np.percentile(values, [50, 95])
    return {"min": int(values.min()), "p50": float(p50), "p95": float(p95), "max": int(values.max()),
            "mean": round(float(values.mean()), 1)}


def balance(context,
            max_ratio: Annotated[float, Field(ge=1, description="largest class / smallest class above which the "
                                                               "classes are imbalanced")] = 3.0,
            max_share: Annotated[float, Field(gt=0, le=1, description="share of the rows above which the largest "
                                                                     "class is too large")] = 0.5,
            max_task_share: Annotated[float, Field(gt=0, le=1, description="share of the rows above which the "
                                                                          "largest task is too large")] = 0.5,
            max_task_ratio: Annotated[float, Field(ge=1, description="largest task / smallest task above which the "
                                                                    "tasks are imbalanced")] = 20.0,
            outlier_z: Annotated[float, Field(gt=0, description="robust z-score (MAD) of a length above which it "
                                                               "is an outlier")] = 5.0,
            min_rows: Annotated[int, Field(ge=0, description="fewer rows than this: no balance checks")] = 20,
            ) -> Iterator[Issue]:
    """Class imbalance (ratio and share), task imbalance, length outliers; length statistics."""
    import numpy as np
    labels: Counter = Counter()
    tasks: Counter = Counter()
    prompt_len = np.zeros(context.rows, dtype=np.int64)
    output_len = np.zeros(context.rows, dtype=np.int64)
    with_input = 0
    for example in context.examples:
        row = example.row
        prompt_len[row] = len(prompt_of(example))
        output_len[row] = len(example.response_text())
        with_input += bool(example.input)
        if example.label is not None and example.label.strip():  # empty ones are empty_output
            labels[example.label.strip()] += 1
        category = example.meta.get("category")
        if category is not None:
            tasks[category] += 1
    total = context.rows
    if len(labels) > 1 and total >= min_rows:
        (top, top_n), (low, low_n) = labels.most_common()[0], labels.most_common()[-1]
        ratio, share = top_n / low_n, top_n / total
        if ratio > max_ratio or share > max_share:
            yield Issue("balance", "class_imbalance", "warning",
                        f"classes are imbalanced: {top!r} has {top_n} rows ({share:.0%}), {low!r} has {low_n} "
                        f"(ratio {ratio:.1f}; thresholds: ratio {max_ratio:g}, share {max_share:.0%})", [],
                        {"counts": dict(labels.most_common()), "ratio": round(ratio, 3), "largest_share": round(share, 4)})
    if len(tasks) > 1 and total >= min_rows:
        (top, top_n), (low, low_n) = tasks.most_common()[0], tasks.most_common()[-1]
        ratio, share = top_n / low_n, top_n / total
        if share > max_task_share or (len(tasks) <= 50 and ratio > max_task_ratio):
            yield Issue("balance", "task_imbalance", "warning",
                        f"tasks are imbalanced: {top!r} has {top_n} rows ({share:.0%}), {low!r} has {low_n} "
                        f"(ratio {ratio:.1f}; thresholds: share {max_task_share:.0%}, ratio {max_task_ratio:g})", [],
                        {"counts": dict(tasks.most_common(50)), "ratio": round(ratio, 3), "largest_share": round(share, 4)})
    outliers = set()
    for lengths in (prompt_len, output_len):
        outliers |= _outliers(lengths, outlier_z)
    if outliers:
        rows = sorted(outliers)
        yield Issue("balance", "length_outlier", "info",
                    f"a prompt or output length far from the rest (robust z-score of log length over "
                    f"{outlier_z:g}) in {count_rows(len(rows))}", rows)
    context.stats["balance"] = {
        "rows": total,
        "input_share": round(with_input / total, 4) if total else 0.0,
        "prompt_chars": _percentiles(prompt_len),
        "output_chars": _percentiles(output_len),
        "labels": dict(labels.most_common()),
        "tasks": dict(tasks.most_common(50)),
        "distinct_tasks": len(tasks),
    }


def _outliers(lengths: np.ndarray, z: float) -> set[int]:
    """Rows whose log length lies more than ``z`` robust standard deviations (MAD) from the median."""
    import numpy as np
    if len(lengths) < 20:
        return set()
    present = lengths > 0  # empty fields are the quality validator's business
    logs = np.log1p(lengths)
    median = np.median(logs[present]) if present.any() else 0.0
    mad = max(np.median(np.abs(logs[present] - median)) * 1.4826 if present.any() else 0.0, 0.05)
    return set(np.flatnonzero(present & (np.abs(logs - median) / mad > z)).tolist())


balance.codes = {  # code: (severity, what it means, how to fix); the README table is generated from it
    'class_imbalance': (
        'warning',
        'the largest class is more than `max_ratio` (3) times the smallest, or holds more than '
        '`max_share` (50%) of the rows; `details.counts`',
        'rebalance (resample, weight) or accept it by raising the thresholds',
    ),
    'task_imbalance': (
        'warning',
        "one task/category (the spec's `task` column) holds more than `max_task_share` (50%) of the "
        'rows, or (at most 50 categories) the largest is over `max_task_ratio` (20) times the '
        'smallest',
        'rebalance the task mix',
    ),
    'length_outlier': (
        'info',
        'a prompt or response length lies more than `outlier_z` (5) robust standard deviations (MAD '
        'of log length) from the median',
        'check the rows for pasted documents, truncation or junk',
    ),
}
