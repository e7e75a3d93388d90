"""``sftkit eval --diff A.json B.json``: two evaluations' metrics side by side, and B minus A
with a paired bootstrap interval and p-value where the two were run on the same prompts.

Pairing needs the same prompt set (``provenance.prompt_set_sha256`` equal): the per-example
scores of the same rows are then paired, resampled together (A's resamples and seed). Two
results of different prompts, or written before sftkit recorded prompt hashes, still show both
sets of metrics, and say why no paired figure is given. Corpus aggregates (BLEU, macro F1) are
not the mean of the per-example scores in the JSON, so they are shown side by side only.
Models are matched by their key (``tuned`` with ``tuned``, ``model_2`` with ``model_2``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftkit.errors import UsageError


def read_result(path: str | Path) -> dict:
    """An eval.json, checked to be one (a clear message otherwise)."""
    from sftkit.io import check_readable

    check_readable(path)
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a JSON file ({exc})", hint="pass two eval.json files of sftkit eval") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict) or not isinstance(
            data.get("models"), dict):
        raise UsageError(f"{path}: not the JSON result of sftkit eval (no metrics and models)",
                         hint="pass two eval.json files of sftkit eval")
    return data


def prompt_hash(data: dict) -> str | None:
    """The prompt-set hash of a result (the same for every model of it), or None when absent."""
    for model in data["models"].values():
        found = ((model or {}).get("provenance") or {}).get("prompt_set_sha256")
        if found:
            return str(found)
    return None


def compare(a: dict, b: dict) -> dict:
    """The diff data: ``paired`` (bool) and why not, and one row per model key and sub-metric."""
    from sftkit import stats

    hash_a, hash_b = prompt_hash(a), prompt_hash(b)
    if hash_a is None or hash_b is None:
        paired, why = False, "a result has no prompt hashes (written by an older sftkit): no paired figures"
    elif hash_a != hash_b:
        paired, why = False, "the prompt sets differ (prompt_set_sha256): no paired figures, metrics side by side only"
    else:
        paired, why = True, "the same prompts: B - A paired on the same rows"
    boot = a.get("bootstrap") or {}
    resamples, seed = int(boot.get("resamples", stats.RESAMPLES)), int(boot.get("seed", stats.SEED))
    confidence = float(boot.get("confidence", stats.CONFIDENCE))
    keys = list(dict.fromkeys([k for k in a["models"]] + [k for k in b["models"]]))
    rows = []
    for key in keys:
        for sub in dict.fromkeys(list(a["metrics"]) + list(b["metrics"])):
            entry_a, entry_b = a["metrics"].get(sub) or {}, b["metrics"].get(sub) or {}
            if key not in entry_a and key not in entry_b:
                continue
            row: dict[str, Any] = {"model": key, "metric": sub, "a": entry_a.get(key), "b": entry_b.get(key),
                                   "difference": None, "note": ""}
            if not (row["a"] and row["b"]):
                row["note"] = "only in " + ("A" if row["a"] else "B")
            elif not paired:
                row["note"] = "not paired"
            elif "corpus" in (entry_a.get("aggregate"), entry_b.get("aggregate")):
                row["note"] = "corpus aggregate: not paired"
            else:
                scores_a = [((e.get("scores") or {}).get(key) or {}).get(sub) for e in a.get("examples") or []]
                scores_b = [((e.get("scores") or {}).get(key) or {}).get(sub) for e in b.get("examples") or []]
                if not scores_a or len(scores_a) != len(scores_b) or None in scores_a or None in scores_b:
                    row["note"] = "per-example scores missing"
                else:
                    row["difference"] = stats.paired_bootstrap_mean(scores_a, scores_b, resamples, seed,
                                                                    confidence).to_dict()
            rows.append(row)
    return {"paired": paired, "why": why, "prompt_set_sha256": {"a": hash_a, "b": hash_b},
            "bootstrap": {"resamples": resamples, "seed": seed, "confidence": confidence}, "rows": rows}


def _fmt(entry: dict | None, signed: bool = False) -> str:
    if not entry:
        return ""
    sign = "+" if signed else ""
    return f"{entry['value']:{sign}.3f} [{entry['low']:{sign}.3f}, {entry['high']:{sign}.3f}]"


def print_diff(path_a: str, path_b: str) -> dict:
    """Print the side-by-side table of two eval.json files; returns the diff data."""
    from rich import box
    from rich.table import Table

    from sftkit.console import console, plain

    a, b = read_result(path_a), read_result(path_b)
    diff = compare(a, b)
    table = Table(title=plain(f"sftkit eval --diff: A = {path_a}, B = {path_b}"), title_justify="left",
                  caption=plain(diff["why"]), caption_justify="left", box=box.SIMPLE_HEAD)
    for header in ("model", "metric", "A", "B", "B - A", "p"):
        table.add_column(header, justify="left" if header in ("model", "metric") else "right")
    for row in diff["rows"]:
        d = row["difference"]
        style = ("green" if d["low"] > 0 else "red") if d and d["significant"] else ""
        table.add_row(plain(row["model"]), plain(row["metric"]), plain(_fmt(row["a"])), plain(_fmt(row["b"])),
                      plain(_fmt(d, signed=True) if d else row["note"], style),
                      plain(f"{d['p_value']:.3f}" if d else ""))
    console.print(table)
    return diff
