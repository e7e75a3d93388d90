"""Carve the sweep's validation split out of the demo's training data (never the test split).

Writes ``demo/financial_sentiment/sweep/``: ``val.jsonl`` (150 rows, stratified by label, seed 7),
``train.jsonl`` (the other 331 rows of ``train.jsonl``) and ``train_<label>.jsonl`` (the same
331 rows split by label, for label-balanced sampling with per-source weights). The files are
committed; this script regenerates them identically:

    python demo/make_sweep_split.py
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent / "financial_sentiment"
VAL_ROWS = 150
SEED = 7


def read_rows(path: Path) -> list[dict]:
    """The JSONL rows of ``path``, in file order."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def stratified_split(rows: list[dict], size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(rest, val): ``size`` rows drawn per label in proportion to its share (largest remainder)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_label[row["label"]].append(index)
    exact = {label: size * len(ids) / len(rows) for label, ids in by_label.items()}
    quota = {label: int(share) for label, share in exact.items()}
    for label in sorted(exact, key=lambda lab: exact[lab] - quota[lab], reverse=True)[:size - sum(quota.values())]:
        quota[label] += 1
    rng = random.Random(seed)
    chosen = set()
    for label in sorted(by_label):
        chosen.update(rng.sample(by_label[label], quota[label]))
    return ([row for i, row in enumerate(rows) if i not in chosen],
            [row for i, row in enumerate(rows) if i in chosen])


def main() -> None:
    rows = read_rows(HERE / "train.jsonl")
    rest, val = stratified_split(rows, VAL_ROWS, SEED)
    out = HERE / "sweep"
    out.mkdir(exist_ok=True)
    write_rows(out / "val.jsonl", val)
    write_rows(out / "train.jsonl", rest)
    for label in sorted({row["label"] for row in rows}):
        write_rows(out / f"train_{label}.jsonl", [row for row in rest if row["label"] == label])
    for name, part in (("val", val), ("train", rest)):
        counts = {label: sum(r["label"] == label for r in part) for label in sorted({r["label"] for r in part})}
        print(f"{name}: {len(part)} rows {counts}")


if __name__ == "__main__":
    main()
