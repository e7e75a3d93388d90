"""The demo's ablations: the recipes of demo/ablations/, each changing one thing of base.yaml,
trained one at a time (seeded, same data: the sweep's 331 training rows, same steps) and scored
on the sweep's validation split, each against base.yaml on the same rows (paired differences).

    python demo/run_ablations.py              # every ablation not yet in runs/ablations/log.jsonl
    python demo/run_ablations.py full_ft      # only these (base.yaml always runs first)
    python demo/run_ablations.py --table      # print the README table of what ran
"""
from __future__ import annotations

import json
import sys

from experiments import ROOT, run, table

VAL = "demo/financial_sentiment/sweep/val.jsonl"
SPEC = "demo/financial_sentiment/spec.yaml"
ABLATIONS = {  # name -> what it changes in base.yaml
    "base": "chatml, completion_only, LoRA, packing (the reference)",
    "full_masking": "masking: full (loss on the prompt tokens too)",
    "full_ft": "method: full (every weight), lr 1e-4",
    "no_packing": "packing: false (padded batches)",
    "alpaca": "template: alpaca",
}
# `sftkit eval --compare` prompts both models with the evaluated run's template, so a run with
# another template is not compared with the reference on paired prompts (its row says so).
UNPAIRED = ("alpaca",)


def main(argv: list[str]) -> None:
    if argv != ["--table"]:
        names = ["base", *[n for n in (argv or ABLATIONS) if n != "base"]]
        for name in names:
            run("ablations", name, f"demo/ablations/{name}.yaml", [], VAL, SPEC,
                compare=None if name == "base" or name in UNPAIRED else "runs/ablations/base")
    log = ROOT / "runs" / "ablations" / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    order = {name: i for i, name in enumerate(ABLATIONS)}
    rows.sort(key=lambda row: order.get(row["name"], len(order)))
    done = {row["name"] for row in rows}
    for row in rows:
        row["unpaired"] = row["name"] in UNPAIRED
        row["name"] = f"{row['name']}: {ABLATIONS.get(row['name'], '')}"
    print(f"validation split {VAL} (150 rows); every run trained on demo/financial_sentiment/sweep/train.jsonl")
    print(table(rows, ["accuracy", "f1_macro"], label="ablation (demo/ablations/NAME.yaml)", compared="accuracy"))
    for name, change in ABLATIONS.items():
        if name not in done:
            print(f"| {name}: {change} | not run | | | | | | | |")


if __name__ == "__main__":
    main(sys.argv[1:])
