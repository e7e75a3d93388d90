"""Benchmark: sftkit's batched generation against a one-prompt-at-a-time loop.

Both decode greedily with SmolLM2-135M-Instruct on the same prompts, rendered with the
alpaca template as `sftkit eval` renders them, and the same ``max_new_tokens``. The loop is
the form tutorials write: tokenize one prompt, call ``model.generate``, decode the new
tokens. The workloads (``both``: the first two, issue 12's; ``all``: the three):

- ``dialogsum``: 32 DialogSum dialogues (../shared/data; prompts of ~240 tokens, summaries
  of up to 64 tokens): prefill and decoding both weigh;
- ``instructions``: 64 Self-Instruct seed tasks (../shared/data; short prompts, answers of
  up to 64 tokens): decoding dominates, which is what batching speeds up;
- ``classification``: 64 of the demo's held-out sentences (prompts of about 100 tokens,
  answers of a sentence at most): the prompt pass (prefill) dominates, and batching cannot
  reduce its arithmetic.

The loop runs once per workload, then sftkit.generate once per ``--batch-size`` (interleaved
in one process, so the machine's load hits both alike). The table shows the timings side by
side, the speedup, and how many outputs are identical token for token.

    .venv/bin/python bench/bench_generate.py [--workload both|all|dialogsum|instructions|classification]
        [--prompts N] [--batch-size 16 32]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFTKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
WORKLOADS = {
    # name: (data, spec, max_new_tokens, prompts)
    "dialogsum": (SHARED / "dialogsum.dev.jsonl", "dialogsum", 64, 32),
    "instructions": (SHARED / "self_instruct_seed_tasks.jsonl", "self_instruct", 64, 64),
    "classification": (ROOT / "demo" / "financial_sentiment" / "test.jsonl",
                       str(ROOT / "demo" / "financial_sentiment" / "spec.yaml"), 32, 64),
}
GROUPS = {"both": ["dialogsum", "instructions"], "all": list(WORKLOADS)}


def prompts_for(workload: str, n: int, tokenizer) -> list[str]:
    from itertools import islice

    from sftkit.pipeline import DataRequest, RenderSettings, prepare

    data, spec, _, _ = WORKLOADS[workload]
    prepared = prepare(DataRequest(str(data), spec=spec), RenderSettings(template="alpaca"), tokenizer=tokenizer)
    return [prepared.encoder.prompt(example) for example in islice(prepared.examples(), n)]


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


def run(workload: str, model, tokenizer, n: int | None, batch_sizes: list[int], max_new_tokens: int | None) -> dict:
    """Time the loop, then the batched generation at each batch size, on one workload."""
    from sftkit.generate import generate

    max_new = max_new_tokens or WORKLOADS[workload][2]
    prompts = prompts_for(workload, n or WORKLOADS[workload][3], tokenizer)
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    start = time.perf_counter()
    looped = loop_generate(model, tokenizer, prompts, max_new)
    loop_s = time.perf_counter() - start
    batched_runs = []
    for batch_size in batch_sizes:
        start = time.perf_counter()
        batched = generate(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=batch_size, progress=False)
        batch_s = time.perf_counter() - start
        differ = [i for i, (a, b) in enumerate(zip(looped, batched)) if a != b.token_ids]
        note = ""
        if differ:
            first, prefix = differ[0], 0
            a, b = looped[differ[0]], batched[differ[0]].token_ids
            while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
                prefix += 1
            note = (f"{workload}, batch {batch_size}: outputs differ for prompts {differ}; e.g. prompt {first}: the "
                    f"same first {prefix} tokens, then {tokenizer.decode(list(a[prefix:prefix + 5]))!r} (loop) vs "
                    f"{tokenizer.decode(list(b[prefix:prefix + 5]))!r} (batched)")
        batched_runs.append({"batch_size": batch_size, "batched_s": batch_s, "speedup": loop_s / batch_s,
                             "identical": len(prompts) - len(differ), "differ": differ, "note": note})
    return {"workload": workload, "prompts": len(prompts), "prompt_tokens": [min(lengths), max(lengths)],
            "max_new_tokens": max_new, "new_tokens": sum(len(t) for t in looped), "loop_s": loop_s,
            "batched": batched_runs, "load_average": list(os.getloadavg())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=[*GROUPS, *WORKLOADS], default="both")
    parser.add_argument("--prompts", type=int, default=None, help="default: 32 dialogsum, 64 the others")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: 64 dialogsum and instructions, 32 classification")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16, 32])
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
    generate(model, tokenizer, ["Hello"], max_new_tokens=2, progress=False)  # warm-up
    workloads = GROUPS.get(args.workload, [args.workload])
    for name in list(workloads):
        if not WORKLOADS[name][0].exists():
            print(f"skipping the {name} workload: {WORKLOADS[name][0]} is absent")
            workloads.remove(name)
    results = [run(w, model, tokenizer, args.prompts, args.batch_size, args.max_new_tokens) for w in workloads]

    table = Table(title=f"batched generation vs a one-prompt loop: SmolLM2-135M, greedy, "
                        f"{torch.get_num_threads()} CPU thread(s)", title_justify="left")
    for column in ("workload", "method", "seconds", "new tokens/s", "speedup", "identical outputs"):
        table.add_column(column, justify="left" if column in ("workload", "method") else "right")
    for r in results:
        what = (f"{r['workload']}: {r['prompts']} prompts of {r['prompt_tokens'][0]}-{r['prompt_tokens'][1]} "
                f"tokens, max_new_tokens {r['max_new_tokens']}")
        table.add_row(what, "one prompt at a time (tutorial loop)", f"{r['loop_s']:.1f}",
                      f"{r['new_tokens'] / r['loop_s']:.1f}", "1.00x", "reference")
        for i, b in enumerate(r["batched"]):
            table.add_row("", f"sftkit.generate, batch {b['batch_size']}", f"{b['batched_s']:.1f}",
                          f"{r['new_tokens'] / b['batched_s']:.1f}", f"{b['speedup']:.2f}x",
                          f"{b['identical']}/{r['prompts']}", end_section=i == len(r["batched"]) - 1)
    Console(width=140).print(table)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for r in results:
        for b in r["batched"]:
            if b["note"]:
                print(b["note"])
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
