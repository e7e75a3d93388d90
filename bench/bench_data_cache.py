"""Memory of the encoded training data: the Arrow cache against the lists it replaced.

    python bench/bench_data_cache.py                 # 5,000 real rows + a 1M-example cache
    python bench/bench_data_cache.py --rows 4000 --scale-rows 100000

Part 1 encodes ``--rows`` synthetic Alpaca rows of about 500 tokens with ``sftkit train``'s own
path (``load_training_data``), each way in a fresh process: without validation (streamed into
the tokenizing workers and the Arrow cache), with validation (the validators' encodings kept,
then converted), and reading the cache back; it prints the wall time, the peak RSS of the main
process and of the workers, and the cache's bytes per token.

Part 2 writes a cache of ``--scale-rows`` examples of 500 tokens (30% of them trained, random
ids: no tokenizer involved) through the same writer, then, in a fresh process, memory-maps it,
builds the seeded schedule over it and collates 200 steps of batches of 8: the private memory
(RssAnon) of that process is what each training process pays per million examples; the file's
pages (RssFile) are shared by every process on the machine through the page cache.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def make_rows(path: Path, rows: int, seed: int = 0) -> None:
    """Alpaca rows of ~500 tokens: words drawn from the SmolLM2 vocabulary (about one token each)."""
    import random

    from sftkit.models import load_tokenizer

    vocab = sorted(t[1:] for t in load_tokenizer("smollm2-135m").get_vocab() if t.startswith("Ġ") and t[1:].isalpha())
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            words = lambda n: " ".join(rng.choice(vocab) for _ in range(n))  # noqa: E731
            handle.write(json.dumps({"instruction": words(40), "input": words(290), "output": words(130)}) + "\n")


def encode_once(data: Path, cache: Path, validate: bool) -> dict:
    """In this (fresh) process: sftkit train's data loading; figures of the run."""
    from sftkit.recipe import build_recipe
    from sftkit.train.sources import load_training_data

    os.environ["SFTKIT_DATA_CACHE"] = str(cache)
    recipe = build_recipe(None, {"data": [str(data)], "model": "tiny-random", "max_length": 1024})
    began = time.perf_counter()
    loaded = load_training_data(recipe, validate=validate, write_reports=False)
    seconds = time.perf_counter() - began
    stats = loaded.sources[0].stats
    return {"seconds": round(seconds, 1), "rows": stats["used"], "tokens": stats["tokens"],
            "trained_tokens": stats["trained_tokens"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "workers_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "cache_bytes": sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())}


def write_scale(cache: Path, rows: int, length: int) -> dict:
    """A cache of ``rows`` random examples of ``length`` tokens, 30% trained, through write_cache."""
    import numpy as np

    os.environ["SFTKIT_DATA_CACHE"] = str(cache)
    from sftkit.train.cache import CHUNK_ROWS, Block, write_cache

    rng = np.random.default_rng(0)
    trained = int(length * 0.3)

    def blocks():
        done = 0
        while done < rows:
            n = min(CHUNK_ROWS, rows - done)
            done += n
            ids = rng.integers(0, 49152, n * length, dtype=np.int32)
            source = np.tile(np.arange(length - trained - 1, length - 1, dtype=np.int32), n)
            yield Block({"input_ids": ids, "source": source, "target": ids[:n * trained].copy(),
                         "weight": np.ones(n * trained, dtype=np.float32)},
                        {"input_ids": np.arange(n + 1, dtype=np.int64) * length,
                         **{c: np.arange(n + 1, dtype=np.int64) * trained for c in ("source", "target", "weight")}},
                        n, 0)

    began = time.perf_counter()
    folder = write_cache("scale", blocks(), lambda: {"path": "synthetic", "skipped": []})
    return {"write_seconds": round(time.perf_counter() - began, 1),
            "cache_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}


def train_view(cache: Path, steps: int) -> dict:
    """In this (fresh) process: memory-map the cache, schedule it, collate ``steps`` steps of 8."""
    import datasets  # noqa: F401 - imported first: what follows is the data's own memory
    import torch  # noqa: F401

    from sftkit.train.cache import EncodedSet
    from sftkit.train.data import Schedule, Source, collate

    before = {f: status_kb(f) for f in ("RssAnon", "RssFile")}
    began = time.perf_counter()
    samples = EncodedSet.from_arrow(cache / "scale" / "data.arrow")
    schedule = Schedule([Source("scale", samples)], batch_size=8, seed=0)
    opened = time.perf_counter() - began
    for step in range(steps):
        for micro in schedule.micro_batches(step):
            collate(micro, packed=True, pad_id=0)
    after = {f: status_kb(f) for f in ("RssAnon", "RssFile")}
    return {"examples": len(samples), "open_and_schedule_s": round(opened, 2),
            "steps_per_s": round(steps / (time.perf_counter() - began - opened), 1),
            "rss_anon_mb": round((after["RssAnon"] - before["RssAnon"]) / 1024, 1),
            "rss_file_mb": round(after["RssFile"] / 1024, 1), "process_rss_anon_mb": round(after["RssAnon"] / 1024, 1)}


def child(function: str, *args: str) -> dict:
    """Run one measurement in a fresh interpreter (peak RSS is per process)."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_data_cache as b; "
            f"print(json.dumps(b.{function}(*{list(args)!r})))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _encode(data: str, cache: str, validate: str) -> dict:
    return encode_once(Path(data), Path(cache), validate == "1")


def _scale(cache: str, rows: str, length: str) -> dict:
    return write_scale(Path(cache), int(rows), int(length))


def _view(cache: str, steps: str) -> dict:
    return train_view(Path(cache), int(steps))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--only-scale", action="store_true", help="skip part 1 (the real encodings)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sftkit-bench-cache-"))
    try:
        load = os.getloadavg()
        print(f"machine: {os.cpu_count()} cores, load {load[0]:.1f}; rows {args.rows:,}, scale rows {args.scale_rows:,}")
        data = work / "rows.jsonl"
        runs = {}
        if not args.only_scale:
            make_rows(data, args.rows)
            runs = {"no validation, cache written": child("_encode", str(data), str(work / "c1"), "0"),
                    "cache read back (same key)": child("_encode", str(data), str(work / "c1"), "0"),
                    "validation, cache written": child("_encode", str(data), str(work / "c2"), "1")}
        if runs:
            print("\n| encoding | rows | tokens | s | main peak RSS | workers peak RSS | cache bytes/token |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, r in runs.items():
            print(f"| {name} | {r['rows']:,} | {r['tokens']:,} | {r['seconds']} | {r['peak_rss_mb']:,} MB | "
                  f"{r['workers_peak_rss_mb']:,} MB | {r['cache_bytes'] / r['tokens']:.2f} |")
        scale = child("_scale", str(work / "c3"), str(args.scale_rows), str(args.length))
        view = child("_view", str(work / "c3"), "200")
        per_million = 1e6 / args.scale_rows
        print(f"\n{args.scale_rows:,} examples x {args.length} tokens: cache {scale['cache_bytes'] / 2**30:.2f} GiB on disk "
              f"({scale['cache_bytes'] / (args.scale_rows * args.length):.2f} bytes/token), written in "
              f"{scale['write_seconds']} s")
        print(f"training view: open + schedule {view['open_and_schedule_s']} s, {view['steps_per_s']} steps/s of 8; "
              f"private memory for the data {view['rss_anon_mb']:,} MB (process {view['process_rss_anon_mb']:,} MB), "
              f"mapped file pages resident {view['rss_file_mb']:,} MB (shared, page cache)")
        print(f"per million {args.length}-token examples: {view['rss_anon_mb'] * per_million:,.0f} MB private per "
              f"process, {scale['cache_bytes'] * per_million / 2**30:.2f} GiB of cache shared by all processes")
        print(json.dumps({"runs": runs, "scale": scale, "view": view}))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
