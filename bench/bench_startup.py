"""Start-up time of the CLI: median of 5 runs of `--help`, `plugins` and
`validate --no-tokenizer` on 100 demo rows (issue 12 goal: --help and plugins <= 0.3 s)."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "financial_sentiment"
RUNS = 5
GOAL_S = 0.3


def timed(args: list[str]) -> float:
    """Seconds one `python -m sftkit ARGS` takes (exit 0 required)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sftkit", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "rows100.jsonl"
        lines = (DEMO / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        rows.write_text("".join(lines[:100]), encoding="utf-8")
        cases = {
            "--help": (["--help"], GOAL_S),
            "plugins": (["plugins"], GOAL_S),
            "validate --no-tokenizer (100 rows)": (
                ["validate", str(rows), "--spec", str(DEMO / "spec.yaml"), "--no-tokenizer",
                 "--report-dir", str(Path(tmp) / "reports")], None),
        }
        timed(["--help"])  # warm the bytecode cache once
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(RUNS):  # interleaved so load drift hits every command alike
            for name, (args, _goal) in cases.items():
                times[name].append(timed(args))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| command | median s (5 runs) | min s | goal | met |")
    print("| --- | --- | --- | --- | --- |")
    for name, (_args, goal) in cases.items():
        med, low = statistics.median(times[name]), min(times[name])
        met = "-" if goal is None else ("yes" if med <= goal else "MISSED")
        goal_text = "-" if goal is None else f"<= {goal} s"
        print(f"| `sftkit {name}` | {med:.3f} | {low:.3f} | {goal_text} | {met} |")


if __name__ == "__main__":
    main()
