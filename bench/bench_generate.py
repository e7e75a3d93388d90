"""Benchmark: sftkit's batched generation against a one-prompt-at-a-time loop.

Both decode greedily with SmolLM2-135M-Instruct on the same 64 prompts (the demo's held-out
sentences rendered with the alpaca template, as `sftkit eval` renders them) and the same
``max_new_tokens``. The loop is the form tutorials write: tokenize one prompt, call
``model.generate``, decode the new tokens. The table shows both timings side by side, the
speedup, and how many outputs are identical token for token.

    .venv/bin/python bench/bench_generate.py [--prompts 64] [--max-new-tokens 32] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "demo" / "financial_sentiment" / "test.jsonl"
SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"


def prompts_for(n: int, tokenizer) -> list[str]:
    from itertools import islice

    from sftkit.pipeline import Encoder, open_dataset

    _, _, examples = open_dataset(DATA, spec=str(SPEC))
    encoder = Encoder.build(template="alpaca", tokenizer=tokenizer)
    return [encoder.prompt(example) for example in islice(examples, n)]


def loop_generate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[tuple[int, ...]]:
    """One prompt at a time, as tutorials write it."""
    import torch

    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            new = out[0, inputs["input_ids"].shape[1]:].tolist()
            if tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id)]
            outputs.append(tuple(new))
    return outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("SFTKIT_NO_PROGRESS", "1")

    import torch
    from rich.console import Console
    from rich.table import Table

    from sftkit.generate import generate
    from sftkit.models import load_model, load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    model = load_model("smollm2-135m").eval()
    prompts = prompts_for(args.prompts, tokenizer)
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    generate(model, tokenizer, prompts[:2], max_new_tokens=2, batch_size=2, progress=False)  # warm-up

    start = time.perf_counter()
    looped = loop_generate(model, tokenizer, prompts, args.max_new_tokens)
    loop_s = time.perf_counter() - start

    start = time.perf_counter()
    batched = generate(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       progress=False)
    batch_s = time.perf_counter() - start

    same = sum(1 for a, b in zip(looped, batched) if a == b.token_ids)
    differ = [i for i, (a, b) in enumerate(zip(looped, batched)) if a != b.token_ids]
    tokens = sum(len(t) for t in looped)
    table = Table(title=f"batched generation vs a one-prompt loop: SmolLM2-135M, {len(prompts)} prompts "
                        f"({min(lengths)}-{max(lengths)} tokens), greedy, max_new_tokens {args.max_new_tokens}, "
                        f"{torch.get_num_threads()} CPU threads", title_justify="left")
    for column in ("method", "seconds", "prompts/s", "new tokens/s", "speedup", "identical outputs"):
        table.add_column(column, justify="right" if column != "method" else "left")
    table.add_row("one prompt at a time (tutorial loop)", f"{loop_s:.1f}", f"{len(prompts) / loop_s:.2f}",
                  f"{tokens / loop_s:.1f}", "1.00x", "reference")
    table.add_row(f"sftkit.generate, batch {args.batch_size}, left padding", f"{batch_s:.1f}",
                  f"{len(prompts) / batch_s:.2f}", f"{tokens / batch_s:.1f}", f"{loop_s / batch_s:.2f}x",
                  f"{same}/{len(prompts)}")
    Console().print(table)
    if differ:
        first = differ[0]
        prefix = 0
        while prefix < min(len(looped[first]), len(batched[first].token_ids)) and \
                looped[first][prefix] == batched[first].token_ids[prefix]:
            prefix += 1
        print(f"outputs differ for prompts {differ}; e.g. prompt {first}: the same first {prefix} tokens, then "
              f"{tokenizer.decode(looped[first][prefix:prefix + 5])!r} (loop) vs "
              f"{tokenizer.decode(list(batched[first].token_ids[prefix:prefix + 5]))!r} (batched)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "prompts": len(prompts), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
            "loop_s": loop_s, "batched_s": batch_s, "speedup": loop_s / batch_s, "identical": same,
            "differ": differ, "threads": torch.get_num_threads()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
