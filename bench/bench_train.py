"""Training throughput: sftkit versus TRL SFTTrainer (defaults) and TRL with packing=True.

Same model (SmolLM2-135M, fp32, CPU), same rows of code_alpaca_2k.json in Alpaca format,
completion-only loss, max length 512, batch 8, LoRA r16/alpha32 on the attention and MLP
projections, AdamW (torch) at lr 2e-4. Every contender runs in its own subprocess (for its
peak RSS) for a few steps; the first step is warm-up and not timed. TRL gets sftkit's own
token ids and labels as a pre-tokenized dataset, so all three train exactly the same tokens.
The TRL child also checks that sftkit's loss on a batch equals TRL's loss on the same batch.

    python bench/bench_train.py [--rows 512] [--steps 4] [--data ../shared/data/code_alpaca_2k.json]

Prints a table: trained (label) tokens/s, non-pad tokens/s, padding share, s/step, peak RSS,
share of the measured fp32 matmul peak (6 x parameters x non-pad tokens/s), ratios to TRL defaults.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"
MAX_LENGTH, BATCH, LR = 512, 8, 2e-4
MODEL = os.environ.get("SFTKIT_BENCH_MODEL", "smollm2-135m")  # tiny-random for a smoke test
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONTENDERS = ("sftkit", "trl_defaults", "trl_packing")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The best fp32 matmul rate of this machine right now (GFLOP/s)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def encoded(data: Path):
    """sftkit's encoding of the rows: (tokenizer, TokenizedExamples)."""
    from sftkit.pipeline import DataRequest, RenderSettings, prepare

    prepared = prepare(DataRequest(str(data), spec="alpaca"),
                       RenderSettings(template="alpaca", masking="completion_only", model=MODEL, max_length=MAX_LENGTH))
    return prepared.tokenizer, prepared.encoder.encode_many(prepared.examples())


# -- children -------------------------------------------------------------------------------------

def child_sftkit(data: Path, steps: int) -> dict:
    from sftkit.recipe import build_recipe
    from sftkit.train.loop import train
    from sftkit.train.run_files import read_metrics

    with tempfile.TemporaryDirectory() as out:
        recipe = build_recipe(None, {"data": [str(data)], "spec": "alpaca", "template": "alpaca",
                                     "model": MODEL, "max_length": MAX_LENGTH, "batch_size": BATCH,
                                     "lr": LR, "max_steps": steps, "validate": False, "output_dir": out,
                                     "save_steps": 10 ** 6})
        train(recipe, progress=False, log=lambda _m: None)
        lines = [m for m in read_metrics(Path(out) / "metrics.jsonl") if "loss" in m]
    return {"steps": [{"seconds": m["seconds"], "tokens": m["tokens"], "padded": m["tokens"],
                       "trained": m["trained_tokens"]} for m in lines],
            "first_loss": lines[0]["loss"]}


def child_trl(data: Path, steps: int, packing: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from sftkit.models import load_model

    tokenizer, tokenized = encoded(data)
    dataset = Dataset.from_dict({"input_ids": [t.input_ids for t in tokenized], "labels": [t.labels for t in tokenized]})
    model = load_model(MODEL, dtype="float32")
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, max_length=MAX_LENGTH, per_device_train_batch_size=BATCH, learning_rate=LR,
                         max_steps=steps, packing=packing, optim="adamw_torch", bf16=False, fp16=False,
                         report_to="none", save_strategy="no", logging_steps=1, use_cpu=True, seed=42,
                         dataloader_num_workers=0, disable_tqdm=True)
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
        batches: list[dict] = []
        collate = trainer.data_collator

        def counting_collator(features):
            batch = collate(features)
            labels = batch["labels"]
            real = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
            batches.append({"tokens": int(real), "padded": int(batch["input_ids"].numel()),
                            "trained": int((labels[..., 1:] != -100).sum())})
            return batch

        trainer.data_collator = counting_collator
        check = _same_batch_check(trainer, collate, dataset) if not packing else None
        times: list[float] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, *_a, **_k):
                self.began = time.perf_counter()

            def on_step_end(self, *_a, **_k):
                times.append(time.perf_counter() - self.began)

        trainer.add_callback(Timer())
        trainer.train()
    batches = batches[-len(times):] if len(batches) >= len(times) else batches
    out = {"steps": [{"seconds": s, **b} for s, b in zip(times, batches)]}
    if check:
        out["loss_check"] = check
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def _same_batch_check(trainer, collate, dataset) -> dict:
    """sftkit's loss and TRL's compute_loss on the same 8 rows, with the same (LoRA-initialised) model."""
    import torch

    from sftkit.train.data import collate as sftkit_collate
    from sftkit.train.data import to_sample
    from sftkit.train.loss import batch_inputs, make_loss_module
    from sftkit.types import TokenizedExample

    rows = [dataset[i] for i in range(BATCH)]
    model = trainer.model
    model.eval()
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(model, {k: v for k, v in collate(rows).items()}))
        samples = [to_sample(TokenizedExample(r["input_ids"], r["labels"], [float(x != -100) for x in r["labels"]],
                                              [], [], "", len(r["input_ids"]))) for r in rows]
        loss_sum, weight_sum = make_loss_module(model)(**batch_inputs(sftkit_collate(samples, packed=True, pad_id=0),
                                                                       "cpu"))
    model.train()
    return {"trl": trl_loss, "sftkit": float(loss_sum / weight_sum)}


def run_child(name: str, data: Path, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--data", str(data), "--steps", str(steps)]
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(result: dict, params: int, peak: float) -> dict:
    timed = result["steps"][1:] or result["steps"]  # the first step is warm-up
    seconds = sum(s["seconds"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    padded = sum(s["padded"] for s in timed)
    trained = sum(s["trained"] for s in timed)
    return {"trained_per_s": trained / seconds, "tokens_per_s": tokens / seconds, "s_per_step": seconds / len(timed),
            "padding": 1 - tokens / padded if padded else 0.0, "rss_mb": result["rss_mb"],
            "peak_share": 6 * params * tokens / seconds / (peak * 1e9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--child", choices=CONTENDERS)
    args = parser.parse_args()
    if args.child:
        if args.child == "sftkit":
            result = child_sftkit(args.data, args.steps)
        else:
            result = child_trl(args.data, args.steps, packing=args.child == "trl_packing")
        result["rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return
    if not args.data.exists():
        raise SystemExit(f"{args.data} is absent: the benchmark needs ../shared/data/code_alpaca_2k.json")
    rows = json.loads(args.data.read_text("utf-8"))[: args.rows]
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / f"code_alpaca_{len(rows)}.json"
        subset.write_text(json.dumps(rows), "utf-8")
        import torch

        from sftkit.models import load_model

        params = sum(p.numel() for p in load_model(MODEL).parameters())
        peak = matmul_peak_gflops()
        print(f"{len(rows)} rows, {args.steps} steps each (first untimed), batch {BATCH}, max length {MAX_LENGTH}, "
              f"fp32, {torch.get_num_threads()} threads; fp32 matmul peak {peak:.0f} GFLOP/s", flush=True)
        results = {}
        for name in args.only:
            results[name] = run_child(name, subset, args.steps)
            print(f"  {name} done", flush=True)
    table = {name: summarise(r, params, peak) for name, r in results.items()}
    base = table.get("trl_defaults")
    header = f"{'':14} {'trained tok/s':>13} {'tokens/s':>9} {'padding':>8} {'s/step':>7} {'peak RSS':>9} " \
             f"{'% matmul peak':>13} {'x TRL (trained tok/s)':>21} {'RSS vs TRL':>10}"
    print(header)
    for name, row in table.items():
        ratio = f"{row['trained_per_s'] / base['trained_per_s']:.2f}x" if base else "-"
        rss = f"{row['rss_mb'] / base['rss_mb']:.2f}x" if base else "-"
        print(f"{name:14} {row['trained_per_s']:13.1f} {row['tokens_per_s']:9.1f} {row['padding']:8.0%} "
              f"{row['s_per_step']:7.2f} {row['rss_mb'] / 1024:8.2f}G {row['peak_share']:13.1%} {ratio:>21} {rss:>10}")
    check = results.get("trl_defaults", {}).get("loss_check")
    if check:
        diff = abs(check["trl"] - check["sftkit"])
        print(f"same-batch loss: sftkit {check['sftkit']:.6f}, TRL {check['trl']:.6f} (difference {diff:.2e}"
              f"{', equal' if diff < 1e-4 else ', DIFFERENT'})")
    if "sftkit" in results and "trl_defaults" in results:
        print(f"first-step loss (own batch order): sftkit {results['sftkit']['first_loss']:.4f}")


if __name__ == "__main__":
    main()
