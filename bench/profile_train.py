"""Where one sftkit training step spends its time (torch.profiler), on real code_alpaca rows.

    python bench/profile_train.py [--method full] [--steps 3] [--rows 256] [--gc]

Runs ``sftkit train`` (SmolLM2-135M by default, ``SFTKIT_BENCH_MODEL`` to change it; batch 8,
max length 512) and profiles the last of ``--steps`` steps (the earlier ones warm up). Prints
the step's time by kind of work: forward of the attention, MLP and LM head modules (module
ranges), the backward by operator, the optimizer and gradient clipping, and the top operators.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SFTKIT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "code_alpaca_2k.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--method", choices=("full", "lora"), default="full")
    parser.add_argument("--gc", action="store_true", help="gradient checkpointing")
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    import sftkit.train.loop as loop
    from sftkit.recipe import build_recipe
    from sftkit.train.loss import model_parts

    rows = json.loads(args.data.read_text("utf-8"))[: args.rows]
    real_step = loop.train_step
    found: dict = {}

    def label_modules(model) -> None:
        decoder, head = model_parts(model)
        named = [("lm_head", head), ("embed_tokens", decoder.get_input_embeddings())]
        for layer in decoder.layers:
            named += [("attention", layer.self_attn), ("mlp", layer.mlp)]
        for name, module in named:
            def pre(_m, _a, name=name):
                _m._sftkit_range = record_function(f"fwd::{name}")
                _m._sftkit_range.__enter__()

            def post(_m, _a, _o):
                _m._sftkit_range.__exit__(None, None, None)

            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)

    def profiled_step(run, step):
        if step < args.steps:
            return real_step(run, step)
        label_modules(run.model)
        optimizer_step = run.optimizer.step

        def timed_optimizer(*a, **k):
            with record_function("optimizer.step"):
                return optimizer_step(*a, **k)

        run.optimizer.step = timed_optimizer
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            began = time.perf_counter()
            record = real_step(run, step)
            found["seconds"] = time.perf_counter() - began
        found["prof"], found["record"] = prof, record
        return record

    loop.train_step = profiled_step
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "rows.json"
        subset.write_text(json.dumps(rows), "utf-8")
        recipe = build_recipe(None, {"data": [str(subset)], "spec": "alpaca", "template": "alpaca",
                                     "model": os.environ.get("SFTKIT_BENCH_MODEL", "smollm2-135m"), "max_length": 512,
                                     "batch_size": 8, "method": args.method, "gradient_checkpointing": args.gc,
                                     "max_steps": args.steps, "validate": False, "output_dir": str(Path(tmp) / "run"),
                                     "save_steps": 10 ** 6})
        loop.train(recipe, progress=False, log=lambda _m: None)
    prof, record, seconds = found["prof"], found["record"], found["seconds"]
    print(f"step {args.steps}: {seconds:.2f} s, {record['tokens']} tokens, {record['trained_tokens']} trained, "
          f"{torch.get_num_threads()} threads")
    events = prof.key_averages()
    ranges = {e.key: e.cpu_time_total / 1e6 for e in events if e.key.startswith(("fwd::", "optimizer.step"))}
    for key, value in sorted(ranges.items(), key=lambda kv: -kv[1]):
        print(f"  {key:34} {value:7.2f} s  {value / seconds:6.1%}")
    backward = defaultdict(float)
    for e in events:
        if e.key.startswith("autograd::engine::evaluate_function:"):
            backward[e.key.split(":")[-1].strip()] += e.cpu_time_total / 1e6
    print("backward by autograd function (inclusive):")
    for key, value in sorted(backward.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {key:34} {value:7.2f} s  {value / seconds:6.1%}")
    print("top operators (self time):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]:
        print(f"  {e.key[:50]:50} {e.self_cpu_time_total / 1e6:7.2f} s  {e.count:6d} calls")


if __name__ == "__main__":
    main()
