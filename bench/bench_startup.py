"""Start-up time of the CLI: median of 5 runs of `--help`, `plugins`, and `validate` on 100
demo rows with and without the tokenizer (issue 12 goals: --help and plugins <= 0.3 s,
validate with the tokenizer <= 2 s)."""
from __future__ import annotations

import os
import resource
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
VALIDATE_GOAL_S = 2.0


def timed(args: list[str]) -> tuple[float, float]:
    """Seconds one `python -m sftkit ARGS` takes (exit 0 required): wall clock, and CPU (user +
    system), which other jobs on a shared machine inflate less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sftkit", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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
            "validate --template chatml, SmolLM2 tokenizer (100 rows)": (
                ["validate", str(rows), "--spec", str(DEMO / "spec.yaml"), "--template", "chatml",
                 "--report-dir", str(Path(tmp) / "reports")], VALIDATE_GOAL_S),
        }
        timed(["--help"])  # warm the bytecode cache once
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(RUNS):  # interleaved so load drift hits every command alike
            for name, (args, _goal) in cases.items():
                times[name].append(timed(args))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| command | median s (5 runs) | min s | median CPU s | goal | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (_args, goal) in cases.items():
        walls, cpus = [w for w, _ in times[name]], [c for _, c in times[name]]
        med, low = statistics.median(walls), min(walls)
        met = "-" if goal is None else ("yes" if med <= goal else "MISSED")
        goal_text = "-" if goal is None else f"<= {goal} s"
        print(f"| `sftkit {name}` | {med:.3f} | {low:.3f} | {statistics.median(cpus):.3f} | {goal_text} | {met} |")


if __name__ == "__main__":
    main()
