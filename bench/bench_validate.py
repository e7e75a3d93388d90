"""Benchmark: `sftkit validate` (every validator, SmolLM2 tokenizer) versus TRL SFTTrainer's own
dataset preparation (tokenize + completion mask) on the same 50,000 Alpaca rows.

The rows are built from ../shared/data/code_alpaca_2k.json: each is a copy of a source row
with about 30% of its words replaced at random (so rows are unique and not near each other),
plus 2% deliberate near duplicates (one word changed) and 0.5% exact duplicates. Each side
runs in its own subprocess, so its peak RSS is its own. Prints one table.

    python bench/bench_validate.py [--rows 50000]

Target (issue 3): validation costs at most 1.5x TRL's preparation and stays under 2 GiB RSS.
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFTKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
MAX_LENGTH = 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_rows(count: int, seed: int = 0) -> list[dict]:
    """Perturbed copies of code_alpaca_2k: unique rows, some near duplicates, a few exact ones."""
    source = json.loads((SHARED / "code_alpaca_2k.json").read_text("utf-8"))
    source = [r for r in source if r["output"].strip()]
    vocab = sorted({w for r in source for f in ("instruction", "input", "output") for w in r[f].split(" ") if w})
    rng = random.Random(seed)

    def perturb(text: str, share: float) -> str:
        return " ".join(rng.choice(vocab) if w and rng.random() < share else w for w in text.split(" "))

    rows: list[dict] = []
    for index in range(count):
        if index % 50 == 49:  # near duplicate of the previous row: one word changed
            rows.append({k: perturb(v, 0.02) if k == "output" else v for k, v in rows[-1].items()})
        elif index % 200 == 199:
            rows.append(dict(rows[-1]))
        else:
            base = source[index % len(source)]
            rows.append({k: perturb(base[k], 0.3) for k in ("instruction", "input", "output")})
    return rows


def run_validate(path: str, report_dir: str) -> dict:
    import pandera.pandas  # noqa: F401  imports are outside the timing on both sides
    import rensa  # noqa: F401

    from sftkit.cli import main
    from sftkit.models import load_tokenizer

    load_tokenizer("smollm2-135m")  # imports transformers; the timed run loads the tokenizer again
    started = time.perf_counter()
    try:
        main(["validate", path, "--spec", "alpaca", "--max-length", str(MAX_LENGTH), "--report-dir", report_dir,
              "--model", "smollm2-135m"])
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    seconds = time.perf_counter() - started
    summary = json.loads((Path(report_dir) / "validate.json").read_text("utf-8"))
    return {"seconds": seconds, "exit": code, "issues": {i["code"]: len(i["rows"]) for i in summary["issues"]},
            "timings": summary["timings"]}


def run_trl(path: str, report_dir: str) -> dict:
    import datasets
    from trl import SFTConfig, SFTTrainer

    from sftkit.models import load_model, load_tokenizer
    from sftkit.pipeline import Encoder, generation_prompt
    from sftkit.spec import load_spec

    datasets.disable_progress_bars()
    tokenizer = load_tokenizer("smollm2-135m")
    model = load_model("tiny-random")
    spec = load_spec("alpaca")
    encoder = Encoder.build(template="alpaca", tokenizer=tokenizer)
    prompts, completions = [], []
    with open(path, encoding="utf-8") as handle:  # the same alpaca rendering as sftkit, as prompt-completion
        for row, line in enumerate(handle):
            example = spec.to_example(json.loads(line), row)
            prompts.append(generation_prompt(encoder.segments(example)))
            completions.append(example.output)
    dataset = datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})
    config = SFTConfig(output_dir=report_dir, max_length=MAX_LENGTH, completion_only_loss=True, report_to=[],
                       use_cpu=True, dataset_num_proc=None)
    started = time.perf_counter()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    seconds = time.perf_counter() - started
    assert "labels" in trainer.train_dataset.column_names or "completion_mask" in trainer.train_dataset.column_names
    return {"seconds": seconds}


def child(kind: str, path: str, report_dir: str) -> None:
    out = run_validate(path, report_dir) if kind == "validate" else run_trl(path, report_dir)
    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out))


def in_subprocess(kind: str, path: Path, report_dir: Path) -> dict:
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "HF_DATASETS_CACHE": str(report_dir / "hf")}
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(report_dir)], env=env,
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"the {kind} run failed (exit {proc.returncode})")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "PATH", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not (SHARED / "code_alpaca_2k.json").exists():
        print(f"skipped: {SHARED / 'code_alpaca_2k.json'} is absent")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "alpaca_bench.jsonl"
        with open(data, "w", encoding="utf-8") as handle:
            for row in build_rows(args.rows):
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp_path / "v").mkdir()
        (tmp_path / "t").mkdir()
        validate = in_subprocess("validate", data, tmp_path / "v")
        trl = in_subprocess("trl", data, tmp_path / "t")
    rows = args.rows
    ratio = validate["seconds"] / trl["seconds"]
    print(f"\nbench_validate: {rows:,} Alpaca rows from code_alpaca_2k (perturbed), max length {MAX_LENGTH}, "
          f"SmolLM2 tokenizer, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("(imports excluded on both sides; validate includes loading the data and tokenizer and writing reports)")
    print(f"{'run':<44} {'seconds':>8} {'rows/s':>8} {'peak RSS':>10}")
    print(f"{'sftkit validate (all 6 validators + reports)':<44} {validate['seconds']:>8.1f} "
          f"{rows / validate['seconds']:>8.0f} {validate['peak_rss_mb']:>7.0f} MB")
    print(f"{'TRL SFTTrainer dataset preparation':<44} {trl['seconds']:>8.1f} {rows / trl['seconds']:>8.0f} "
          f"{trl['peak_rss_mb']:>7.0f} MB")
    print(f"ratio validate / TRL prep: {ratio:.2f}x (target <= 1.5x); validate peak RSS "
          f"{validate['peak_rss_mb'] / 1024:.2f} GiB (target < 2 GiB)")
    print("validator seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in validate["timings"].items()))
    print("issues found: " + ", ".join(f"{k} {v}" for k, v in validate["issues"].items()))


if __name__ == "__main__":
    main()
