"""The demo's settings sweep: each variant of demo/recipe.yaml trained on the sweep's training
rows and scored on its validation split, never on test.jsonl (see demo/make_sweep_split.py).

    python demo/sweep.py            # every setting not yet in runs/sweep/log.jsonl, then the table
    python demo/sweep.py base lr1e-3 # only these
    python demo/sweep.py --table    # print the table of what ran

One training run at a time; the table has val accuracy and macro F1 with 95% bootstrap
intervals, training time, trained tokens and the load average when the run started.
"""
from __future__ import annotations

import json
import sys

from experiments import ROOT, run, table

SWEEP = "demo/financial_sentiment/sweep"
TRAIN = [f"--data={SWEEP}/train.jsonl"]
BALANCED = [f"--data={SWEEP}/train_neutral.jsonl:1", f"--data={SWEEP}/train_positive.jsonl:2",
            f"--data={SWEEP}/train_negative.jsonl:4.5"]  # 195 / 188 / 189 rows per epoch
SQRT_BALANCED = [f"--data={SWEEP}/train_neutral.jsonl:1", f"--data={SWEEP}/train_positive.jsonl:1.4",
                 f"--data={SWEEP}/train_negative.jsonl:2.2"]
ATTENTION = ["--target-modules", "q_proj,k_proj,v_proj,o_proj"]

# name -> flags on top of the demo recipe as it was before the sweep (chatml, completion_only,
# LoRA r16/alpha32 on every linear layer, batch 8, lr 5e-4, seed 42); the data flag comes first.
# "60 steps" is demo/ablations/base.yaml: the template (alpaca) and masking (full) points of the
# sweep are the ablations of demo/run_ablations.py, on the same split.
SETTINGS = {
    "base (30 steps)": TRAIN + ["--max-steps", "30", "--lr", "5e-4"],
    "60 steps": TRAIN + ["--max-steps", "60", "--lr", "5e-4"],
    "60 steps lr 1e-3": TRAIN + ["--max-steps", "60", "--lr", "1e-3"],
    "60 steps balanced": BALANCED + ["--max-steps", "60", "--lr", "5e-4"],
    "60 steps attention only": TRAIN + ["--max-steps", "60", "--lr", "5e-4", *ATTENTION],
    "60 steps r32 a64": TRAIN + ["--max-steps", "60", "--lr", "5e-4", "--lora-r", "32", "--lora-alpha", "64"],
    "60 steps lr 2e-4": TRAIN + ["--max-steps", "60", "--lr", "2e-4"],
    "60 steps sqrt-balanced": SQRT_BALANCED + ["--max-steps", "60", "--lr", "5e-4"],
    "90 steps": TRAIN + ["--max-steps", "90", "--lr", "5e-4"],
    # the second round, from the best of the first (lr 1e-3):
    "60 steps lr 2e-3": TRAIN + ["--max-steps", "60", "--lr", "2e-3"],
    "60 steps lr 1e-3 r32 a64": TRAIN + ["--max-steps", "60", "--lr", "1e-3", "--lora-r", "32", "--lora-alpha", "64"],
    "60 steps lr 1e-3 attention only": TRAIN + ["--max-steps", "60", "--lr", "1e-3", *ATTENTION],
    "60 steps lr 1e-3 balanced": BALANCED + ["--max-steps", "60", "--lr", "1e-3"],
}


def main(argv: list[str]) -> None:
    if argv != ["--table"]:
        for name in argv or list(SETTINGS):
            run("sweep", name, "demo/recipe.yaml", SETTINGS[name], f"{SWEEP}/val.jsonl",
                "demo/financial_sentiment/spec.yaml")
    log = ROOT / "runs" / "sweep" / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    print(f"validation split {SWEEP}/val.jsonl (150 rows); trained on {SWEEP}/train.jsonl (331 rows)")
    print(table(rows, ["accuracy", "f1_macro"]))


if __name__ == "__main__":
    main(sys.argv[1:])
