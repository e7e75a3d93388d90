"""Training throughput: sftkit versus TRL SFTTrainer, full fine-tuning and LoRA, interleaved.

Same model (SmolLM2-135M, fp32, CPU), same rows of code_alpaca_2k.json in Alpaca format,
completion-only loss, max length 512, batch 8, AdamW (torch), lr 2e-5 (full) / 2e-4 (LoRA r16,
alpha 32, PEFT ``all-linear`` targets for both trainers). TRL gets sftkit's own token ids and
labels as a pre-tokenized dataset, read in sftkit's batch order (a sequential sampler over the
rows in sftkit's seeded order), so every contender trains exactly the same batches.

Contenders, for each method (``full``, ``lora``):

- ``sftkit`` and ``sftkit +gc`` (``gradient_checkpointing``): packed, padding-free batches;
- ``TRL defaults``: padded batches with gradient checkpointing on (TRL's default);
- ``TRL padding_free`` with gradient checkpointing off and on (``max_length=None``, as TRL requires
  without packing; the rows are already truncated to 512 by sftkit). On CPU TRL's padding-free batch
  runs with the model's SDPA attention: transformers sees the restarting position ids and builds a
  block-diagonal causal mask over the flattened row, so the examples stay apart (the loss check
  below proves it). ``--only trl-lora-packing`` adds TRL ``packing=True`` (not the same batches).

Every contender runs in its own process (for its peak RSS) that stays warm: the processes of one
method start together, each sets up and stops before its first step, and the parent drives them
over a pipe, ``--chunk`` steps at a time, round robin (A B C, then B C A, ...), so a drift of the
machine hits all alike. The first ``--warmup`` steps are not timed; a step's time runs from the
parent's go to the end of the optimizer step (data, forward, backward, clipping, update and the
previous step's logging). A fixed fp32 matmul (the canary) is measured before and after each method.

Loss check: the loss of the first step (the same 8 rows, the initial weights; LoRA starts as the
base model) of every contender of a method must agree.

    python bench/bench_train.py [--steps 12] [--warmup 2] [--chunk 2] [--rows 512] [--only NAME ...]
    python bench/bench_train.py --quick      # smoke test: tiny-random model, 3 timed steps

Columns: trained (label) tokens/s, non-pad tokens/s, padding share, s/step, peak RSS, share of the
best canary (full: 6N FLOPs per non-pad token; LoRA: 4N, the frozen base's forward and input
gradient without weight gradients, the adapters' own FLOPs (<1%) left out; N = every parameter of the
base model; attention FLOPs are not counted), and trained tok/s relative to TRL defaults and to TRL
padding_free without gradient checkpointing of the same method.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("SFTKIT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "code_alpaca_2k.json"
MAX_LENGTH, BATCH, SEED = 512, 8, 42
LR = {"full": 2e-5, "lora": 2e-4}
LOSS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Contender:
    name: str
    engine: str  # sftkit | trl
    method: str  # full | lora
    mode: str  # packed (sftkit) | padded | padding_free | packing (TRL)
    gc: bool

    @property
    def label(self) -> str:
        shown = {"packed": "sftkit", "padded": "TRL defaults", "padding_free": "TRL padding_free",
                 "packing": "TRL packing"}[self.mode]
        return f"{self.method} {shown}" + (" +gc" if self.gc and self.mode != "padded" else "")


def _contenders() -> dict[str, Contender]:
    out = {}
    for method in ("full", "lora"):
        for c in (Contender(f"sftkit-{method}", "sftkit", method, "packed", False),
                  Contender(f"sftkit-{method}-gc", "sftkit", method, "packed", True),
                  Contender(f"trl-{method}-defaults", "trl", method, "padded", True),
                  Contender(f"trl-{method}-padfree", "trl", method, "padding_free", False),
                  Contender(f"trl-{method}-padfree-gc", "trl", method, "padding_free", True)):
            out[c.name] = c
    out["trl-lora-packing"] = Contender("trl-lora-packing", "trl", "lora", "packing", True)
    return out


CONTENDERS = _contenders()
DEFAULT = [n for n in CONTENDERS if n != "trl-lora-packing"]


def model_name() -> str:
    return os.environ.get("SFTKIT_BENCH_MODEL", "smollm2-135m")  # tiny-random for the smoke test


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The best fp32 matmul rate of this machine right now (GFLOP/s): the canary."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return best


# -- children -------------------------------------------------------------------------------------

class Stop(Exception):
    """The parent said stop (or closed the pipe)."""


class Channel:
    """The child's side of the pipe: JSON lines out on a private copy of stdout (library prints go
    to stderr, the child's log), commands (``go``/``stop``) in on stdin."""

    def __init__(self) -> None:
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)

    def send(self, **message) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def wait_go(self) -> float:
        """Block until the parent says go (returns the time), or raise Stop."""
        if sys.stdin.readline().strip() != "go":
            raise Stop
        return time.perf_counter()


def sftkit_order(count: int, needed: int) -> list[int]:
    """The row indices sftkit's schedule trains, in order (epoch after epoch), ``needed`` of them."""
    from sftkit.train.data import Source, epoch_array

    order: list[int] = []
    source = Source("rows", range(count))
    epoch = 0
    while len(order) < needed:
        order.extend(int(i) for i in epoch_array([source], SEED, epoch)[:, 1])
        epoch += 1
    return order[:needed]


def fingerprint(ids_rows) -> int:
    """A checksum of a batch's rows (the parent checks that every contender trains the same batches)."""
    return int(sum((i + 1) * sum(int(t) * (j % 7 + 1) for j, t in enumerate(row)) for i, row in enumerate(ids_rows))
               % 1_000_000_007)


def child_sftkit(c: Contender, data: Path, steps: int, channel: Channel) -> None:
    import sftkit.train.loop as loop
    from sftkit.recipe import build_recipe

    real_step = loop.train_step
    clock = {}

    def driven_step(run, step):
        if step == 1:
            first = run.schedule.micro_batches(0)[0]
            channel.send(event="ready", batch=fingerprint([s.input_ids.tolist() for s in first]))
            clock["go"] = channel.wait_go()
        record = real_step(run, step)
        channel.send(event="step", seconds=time.perf_counter() - clock["go"], tokens=record["tokens"],
                     padded=record["tokens"], trained=record["trained_tokens"], loss=record["loss"])
        clock["go"] = channel.wait_go()
        return record

    loop.train_step = driven_step
    with tempfile.TemporaryDirectory() as out:
        recipe = build_recipe(None, {"data": [str(data)], "spec": "alpaca", "template": "alpaca",
                                     "model": model_name(), "max_length": MAX_LENGTH, "batch_size": BATCH,
                                     "method": c.method, "lr": LR[c.method], "gradient_checkpointing": c.gc,
                                     "max_steps": steps + 1, "validate": False, "output_dir": out,
                                     "save_steps": 10 ** 6, "seed": SEED})
        try:
            loop.train(recipe, progress=False, log=lambda _m: None)
        except Stop:
            pass


def encoded(data: Path):
    """sftkit's encoding of the rows that have a trained token: (tokenizer, TokenizedExamples)."""
    from sftkit.pipeline import DataRequest, RenderSettings, prepare

    prepared = prepare(DataRequest(str(data), spec="alpaca"),
                       RenderSettings(template="alpaca", masking="completion_only", model=model_name(),
                                      max_length=MAX_LENGTH))
    rows = prepared.encoder.encode_many(prepared.examples())
    return prepared.tokenizer, [t for t in rows if any(label != -100 for label in t.labels[1:])]


def child_trl(c: Contender, data: Path, steps: int, channel: Channel) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from sftkit.models import load_model

    tokenizer, tokenized = encoded(data)
    if c.mode == "packing":
        rows = tokenized
    else:  # sftkit's batch order, read sequentially
        rows = [tokenized[i] for i in sftkit_order(len(tokenized), (steps + 1) * BATCH)]
    dataset = Dataset.from_dict({"input_ids": [t.input_ids for t in rows], "labels": [t.labels for t in rows]})
    model = load_model(model_name(), dtype="float32")
    peft_config = None
    if c.method == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    out = tempfile.mkdtemp()
    args = SFTConfig(output_dir=out, max_length=None if c.mode == "padding_free" else MAX_LENGTH,
                     per_device_train_batch_size=BATCH, learning_rate=LR[c.method], max_steps=steps + 1,
                     packing=c.mode == "packing", padding_free=c.mode == "padding_free",
                     gradient_checkpointing=c.gc, optim="adamw_torch", bf16=False, fp16=False,
                     report_to="none", save_strategy="no", logging_steps=1, use_cpu=True, seed=SEED,
                     dataloader_num_workers=0, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    if c.mode != "packing":
        trainer._get_train_sampler = lambda *_a, **_k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    collate = trainer.data_collator
    batches: list[dict] = []

    def counting_collator(features):
        batch = collate(features)
        labels = batch["labels"]
        real = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
        batches.append({"tokens": int(real), "padded": int(batch["input_ids"].numel()),
                        "trained": int((labels[..., 1:] != -100).sum())})
        return batch

    trainer.data_collator = counting_collator
    losses: list[float] = []
    compute_loss = trainer.compute_loss

    def recording_loss(*a, **k):
        loss = compute_loss(*a, **k)
        value = loss[0] if isinstance(loss, tuple) else loss
        losses.append(float(value.detach()))
        return loss

    trainer.compute_loss = recording_loss
    clock = {}

    class Driven(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            first = [dataset[i]["input_ids"] for i in range(BATCH)]
            channel.send(event="ready", batch=fingerprint(first) if c.mode != "packing" else None)
            clock["go"] = channel.wait_go()

        def on_step_end(self, _args, _state, control, **_k):
            step = len(clock.setdefault("done", []))
            clock["done"].append(1)
            channel.send(event="step", seconds=time.perf_counter() - clock["go"], loss=losses[-1] if losses else None,
                         **batches[step])
            try:
                clock["go"] = channel.wait_go()
            except Stop:
                control.should_training_stop = True

    trainer.add_callback(Driven())
    trainer.train()


def child_main(name: str, data: Path, steps: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    channel = Channel()
    c = CONTENDERS[name]
    try:
        (child_sftkit if c.engine == "sftkit" else child_trl)(c, data, steps, channel)
    except Stop:
        pass
    channel.send(event="done", rss_mb=peak_rss_mb())


# -- parent ---------------------------------------------------------------------------------------

class Child:
    """A contender's warm process, driven step by step."""

    def __init__(self, c: Contender, data: Path, steps: int, threads: int, logs: Path) -> None:
        self.c, self.steps, self.log_path = c, [], logs / f"{c.name}.log"
        env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false",
               "SFTKIT_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, __file__, "--child", c.name, "--data", str(data), "--steps", str(steps),
               "--threads", str(threads)]
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=str(ROOT))
        self.ready = self.read("ready")
        self.rss_mb = None

    def read(self, event: str) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text("utf-8", "replace")[-4000:]
            raise SystemExit(f"{self.c.name} failed (exit {self.proc.returncode}):\n{tail}")
        message = json.loads(line)
        if message.get("event") != event:
            raise SystemExit(f"{self.c.name}: expected {event}, got {message}")
        return message

    def step(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.steps.append(self.read("step"))

    def finish(self) -> None:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.rss_mb = self.read("done")["rss_mb"]
        self.proc.wait()
        self.log.close()


def drive(children: list[Child], total: int, chunk: int) -> None:
    """``total`` steps of each child, ``chunk`` at a time, round robin with a rotating order."""
    done, turn = 0, 0
    while done < total:
        n = min(chunk, total - done)
        for child in children[turn % len(children):] + children[:turn % len(children)]:
            for _ in range(n):
                child.step()
        done += n
        turn += 1


def summarise(child: Child, warmup: int, params: int, peak: float) -> dict:
    timed = child.steps[warmup:] or child.steps
    seconds = sum(s["seconds"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    padded = sum(s["padded"] for s in timed)
    trained = sum(s["trained"] for s in timed)
    flops = (6 if child.c.method == "full" else 4) * params
    return {"trained_per_s": trained / seconds, "tokens_per_s": tokens / seconds, "s_per_step": seconds / len(timed),
            "padding": 1 - tokens / padded if padded else 0.0, "rss_mb": child.rss_mb, "timed": len(timed),
            "peak_share": flops * tokens / seconds / (peak * 1e9), "first_loss": child.steps[0]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per contender (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--chunk", type=int, default=2, help="steps a contender runs before the next one's turn")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of every contender")
    parser.add_argument("--only", nargs="*", choices=list(CONTENDERS), default=DEFAULT)
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny-random model, 3 timed steps, 1 warm-up")
    parser.add_argument("--child", choices=list(CONTENDERS))
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.data, args.steps, args.threads)
        return
    if args.quick:
        os.environ["SFTKIT_BENCH_MODEL"] = "tiny-random"
        args.steps, args.warmup, args.rows = 3, 1, min(args.rows, 64)
    if not args.data.exists():
        raise SystemExit(f"{args.data} is absent: the benchmark needs ../shared/data/code_alpaca_2k.json")
    rows = json.loads(args.data.read_text("utf-8"))[: args.rows]
    from sftkit.models import load_model

    params = sum(p.numel() for p in load_model(model_name()).parameters())
    total = args.warmup + args.steps
    print(f"{model_name()}: {len(rows)} rows, {args.steps} timed steps per contender after {args.warmup} warm-up, "
          f"round robin in chunks of {args.chunk}; batch {BATCH}, max length {MAX_LENGTH}, fp32, "
          f"{args.threads} threads, {params:,} parameters", flush=True)
    canaries: list[float] = []
    table: dict[str, dict] = {}
    children_by_method: dict[str, list[Child]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / f"code_alpaca_{len(rows)}.json"
        subset.write_text(json.dumps(rows), "utf-8")
        for method in ("full", "lora"):
            chosen = [CONTENDERS[n] for n in args.only if CONTENDERS[n].method == method]
            if not chosen:
                continue
            canaries.append(matmul_peak_gflops())
            print(f"[{method}] canary before: fp32 matmul {canaries[-1]:.0f} GFLOP/s; starting "
                  f"{', '.join(c.name for c in chosen)}", flush=True)
            children = [Child(c, subset, total, args.threads, Path(tmp)) for c in chosen]
            drive(children, total, args.chunk)
            for child in children:
                child.finish()
            canaries.append(matmul_peak_gflops())
            print(f"[{method}] canary after: fp32 matmul {canaries[-1]:.0f} GFLOP/s", flush=True)
            children_by_method[method] = children
    peak = max(canaries)
    print(f"\nshare of peak counted against the best canary, {peak:.0f} GFLOP/s (canaries: "
          f"{', '.join(f'{c:.0f}' for c in canaries)}); full: 6N FLOPs per non-pad token, LoRA: 4N")
    header = (f"{'contender':26} {'trained tok/s':>13} {'tokens/s':>9} {'padding':>8} {'s/step':>7} {'peak RSS':>9} "
              f"{'% peak':>7} {'x TRL defaults':>14} {'x TRL padding_free':>18}")
    loss_ok = True
    for method, children in children_by_method.items():
        print(header)
        rows_of = {ch.c.name: summarise(ch, args.warmup, params, peak) for ch in children}
        table.update(rows_of)
        base = rows_of.get(f"trl-{method}-defaults")
        free = rows_of.get(f"trl-{method}-padfree")
        for child in children:
            row = rows_of[child.c.name]
            vs_base = f"{row['trained_per_s'] / base['trained_per_s']:.2f}x" if base else "-"
            vs_free = f"{row['trained_per_s'] / free['trained_per_s']:.2f}x" if free else "-"
            print(f"{child.c.label:26} {row['trained_per_s']:13.1f} {row['tokens_per_s']:9.1f} {row['padding']:8.0%} "
                  f"{row['s_per_step']:7.2f} {row['rss_mb'] / 1024:8.2f}G {row['peak_share']:7.1%} {vs_base:>14} "
                  f"{vs_free:>18}")
        same = [ch for ch in children if ch.c.mode != "packing"]
        batches = {ch.ready["batch"] for ch in same}
        losses = {ch.c.label: ch.steps[0]["loss"] for ch in same}
        spread = max(losses.values()) - min(losses.values()) if losses else 0.0
        ok = len(batches) <= 1 and spread < LOSS_TOLERANCE
        loss_ok = loss_ok and ok
        print(f"[{method}] first-batch loss check ({'same first batch' if len(batches) <= 1 else 'DIFFERENT batches'}): "
              + ", ".join(f"{k} {v:.6f}" for k, v in losses.items())
              + f"; spread {spread:.2e} -> {'equal' if ok else 'DIFFERENT'}\n")
    print(f"loss check: {'passed' if loss_ok else 'FAILED'}")
    if os.environ.get("SFTKIT_BENCH_JSON"):
        Path(os.environ["SFTKIT_BENCH_JSON"]).write_text(json.dumps({"canaries": canaries, "rows": table,
                                                                      "loss_check": loss_ok}), "utf-8")
    if not loss_ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
