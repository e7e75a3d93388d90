"""Train a recipe variant and score it: the shared core of demo/sweep.py and demo/ablations/run.py.

Each experiment is ``sftkit train RECIPE [FLAGS] --output-dir runs/<group>/<name>`` followed by
``sftkit eval --no-compare`` on an evaluation file; its row (metric with interval, training
time, trained tokens, load average) is appended to ``runs/<group>/log.jsonl`` so that a rerun
skips the experiments already done. ``table`` prints the rows as a Markdown table.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def sftkit(*args: str) -> None:
    """Run one sftkit command from the repository root; stop the script if it fails."""
    command = [sys.executable, "-m", "sftkit", *args]
    print("$ sftkit " + " ".join(args), flush=True)
    result = subprocess.run(command, check=False, cwd=ROOT, env={**os.environ, **OFFLINE})
    if result.returncode:
        sys.exit(f"failed ({result.returncode}): sftkit {' '.join(args)}")


def slug(name: str) -> str:
    """A folder name for an experiment name: ``60 steps lr 1e-3`` -> ``60-steps-lr-1e-3``."""
    return "-".join("".join(c if c.isalnum() or c in ".-" else " " for c in name).split())


def run(group: str, name: str, recipe: str, flags: list[str], eval_data: str, spec: str,
        compare: str | None = None, eval_flags: tuple[str, ...] = ()) -> dict:
    """Train ``recipe`` with ``flags`` into runs/<group>/<slug>, evaluate it on ``eval_data``
    (with ``compare``, a run folder, also that run on the same rows: paired differences)."""
    log = ROOT / "runs" / group / "log.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        row = json.loads(line)
        if row["name"] == name:
            print(f"{name}: already in {log.relative_to(ROOT)}, skipped", flush=True)
            return row
    out = f"runs/{group}/{slug(name)}"
    load = os.getloadavg()[0]
    sftkit("train", recipe, *flags, "--output-dir", out, "--overwrite")
    sftkit("eval", "--model", out, *(["--compare", compare] if compare else ["--no-compare"]), "--data", eval_data, "--spec", spec,
           "--report-dir", f"{out}/eval", *eval_flags)
    summary = json.loads((ROOT / out / "train.json").read_text())["summary"]
    result = json.loads((ROOT / out / "eval" / "eval.json").read_text())
    metrics = {key: value["tuned"] for key, value in result["metrics"].items()}
    differences = {key: value["difference"] for key, value in result["metrics"].items() if "difference" in value}
    row = {"name": name, "recipe": recipe, "flags": flags, "eval_data": eval_data,
           "metrics": metrics, "differences": differences, "primary": result.get("primary"),
           "steps": summary["steps"], "train_seconds": summary["train_seconds"],
           "tokens": summary["tokens"], "trained_tokens": summary["trained_tokens"],
           "final_loss": summary["final_loss"], "load_at_start": round(load, 2),
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    return row


def interval(metric: dict) -> str:
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def difference(row: dict, metric: str) -> str:
    """``+0.020 [-0.040, +0.080] (p 0.52)``: the paired difference from the compared run, if any."""
    if row.get("unpaired"):
        return "n/a: other prompts"
    d = row.get("differences", {}).get(metric)
    if not d:
        return "(reference)"
    return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (p {d['p_value']:.3f})"


def table(rows: list[dict], metrics: list[str], label: str = "setting", compared: str | None = None) -> str:
    """A Markdown table: one row per experiment, each metric with its 95% interval (and, with
    ``compared``, that metric's paired difference from the compared run)."""
    head = [label, *metrics, *([f"{compared} - reference"] if compared else []),
            "steps", "train time", "trained / all tokens", "final loss", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [row["name"], *(interval(row["metrics"][m]) if m in row["metrics"] else "n/a" for m in metrics),
                 *([difference(row, compared)] if compared else []),
                 str(row["steps"]), f"{row['train_seconds']:.0f} s",
                 f"{row['trained_tokens']:,} / {row['tokens']:,}", f"{row['final_loss']:.3f}",
                 f"{row['load_at_start']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
