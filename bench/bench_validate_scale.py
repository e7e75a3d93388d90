"""Benchmark: `sftkit validate` on 1,000,000 short rows: rows/s and peak RSS (it streams its
input into pickled chunks, so memory stays far below holding every row as Python objects).

Rows are short Alpaca records ({instruction, input, output}, about 8 + 12 words) drawn from a
fixed vocabulary with a seeded generator; 1% are exact duplicates and 1% near duplicates.
The run happens in a subprocess, so the peak RSS is validate's own. By default every validator
runs except tokenization (tokenizing a million rows on two shared cores takes many minutes and
its memory is per chunk; ``--tokenizer`` includes it).

    python bench/bench_validate_scale.py [--rows 1000000] [--tokenizer]

Target (issue 6): peak RSS under 4 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("market profit sales growth quarter company shares report board revenue costs forecast order "
         "customer product service region team price plan year month week data model result value change "
         "increase decrease strong weak new old first last local global early late high low open close "
         "write explain list describe compare summarize classify translate name give find compute").split()


def write_rows(path: Path, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    previous = None
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(count):
            if previous is not None and index % 100 == 99:
                row = dict(previous)  # exact duplicate
            elif previous is not None and index % 100 == 49:
                words = previous["output"].split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                row = {**previous, "output": " ".join(words)}  # near duplicate
            else:
                row = {"instruction": " ".join(rng.choices(WORDS, k=8)).capitalize() + ".",
                       "input": " ".join(rng.choices(WORDS, k=4)) if index % 2 else "",
                       "output": " ".join(rng.choices(WORDS, k=12)).capitalize() + "."}
            previous = row
            handle.write(json.dumps(row) + "\n")


def child(path: str, report_dir: str, tokenizer: bool) -> None:
    import pandera.pandas  # noqa: F401  imports outside the timing
    import rensa  # noqa: F401

    from sftkit.cli import main

    args = ["validate", path, "--spec", "alpaca", "--report-dir", report_dir]
    if not tokenizer:
        args.append("--no-tokenizer")
    started = time.perf_counter()
    try:
        main(args)
    except SystemExit:
        pass
    seconds = time.perf_counter() - started
    data = json.loads((Path(report_dir) / "validate.json").read_text("utf-8"))
    print("RESULT " + json.dumps({
        "seconds": seconds, "rows": data["summary"]["rows"], "timings": data["timings"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "issues": {i["code"]: len(i["rows"]) for i in data["issues"]}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokenizer", action="store_true", help="also run the tokenization validator")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.tokenizer)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "short.jsonl"
        write_rows(data, args.rows)
        size = data.stat().st_size
        command = [sys.executable, __file__, "--child", str(data), tmp] + (["--tokenizer"] if args.tokenizer else [])
        proc = subprocess.run(command, env={**os.environ, "SFTKIT_NO_PROGRESS": "1"}, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"the validate run failed (exit {proc.returncode})")
        out = json.loads(lines[-1][len("RESULT "):])
    which = "every validator" + ("" if args.tokenizer else " but tokenization")
    print(f"\nbench_validate_scale: {out['rows']:,} short rows ({size / 2**20:.0f} MiB JSONL), {which}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'run':<34} {'seconds':>8} {'rows/s':>8} {'peak RSS':>10}")
    print(f"{'sftkit validate':<34} {out['seconds']:>8.1f} {out['rows'] / out['seconds']:>8.0f} "
          f"{out['peak_rss_mb'] / 1024:>6.2f} GiB   (target < 4 GiB)")
    print("validator seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in out["timings"].items()))
    print("issues found: " + ", ".join(f"{k} {v}" for k, v in out["issues"].items()))


if __name__ == "__main__":
    main()
