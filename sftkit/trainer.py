"""The training loop behind ``sftkit train``: LoRA or full fine-tuning on sftkit's own labels.

Why a small loop of our own (on ``accelerate`` + ``transformers`` models + ``peft``) rather
than ``transformers.Trainer``/TRL ``SFTTrainer``: the batches are sftkit's encoded examples
(so the masking previewed is exactly what trains), packed without padding and with
attention kept inside each example; the loss runs the LM head only on trained positions;
checkpoints are written atomically and resume is exact (optimizer, scheduler, RNG and the
data order, which is a pure function of the seed and the step). ``accelerate`` supplies
the process group for ``accelerate launch`` / ``torchrun`` (DDP), mixed precision on GPUs and
gradient synchronisation; DeepSpeed/FSDP configs are not wired through this loop.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sftkit.errors import SftkitError, UsageError
from sftkit.recipe import Recipe
from sftkit.train_data import Sample, Schedule, Source, collate, split_by_tokens, to_sample

PACKED_ATTENTION = "sftkit_packed"


class ValidationFailed(SftkitError):
    """The training data failed validation (exit 1, like ``sftkit validate``)."""

    exit_code = 1


# -- attention kept inside each packed example ----------------------------------------------

def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     sftkit_bounds=None, **kwargs):
    """Causal attention run separately on each packed example (``sftkit_bounds`` = [(start, end)]).

    Without bounds (generation, padded batches) it is plain SDPA. Cost is the sum of the
    squared example lengths, not the square of the packed row.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if sftkit_bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    pieces = [torch.nn.functional.scaled_dot_product_attention(
        query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], dropout_p=dropout, scale=scaling, is_causal=True)
        for s, e in sftkit_bounds]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def use_packed_attention(model: Any) -> bool:
    """Switch a transformers model to ``packed_attention``; False when it cannot be switched."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    try:
        model.set_attn_implementation(PACKED_ATTENTION)
    except (ValueError, AttributeError, NotImplementedError):
        return False
    return True


# -- the loss on trained positions only -------------------------------------------------------

def model_parts(model: Any) -> tuple[Any, Any]:
    """``(decoder, lm_head)`` of a causal LM, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def make_loss_module(model: Any) -> Any:
    """An ``nn.Module`` whose forward returns (sum of weighted token losses, sum of weights).

    Hidden states are gathered at the positions whose next token trains, and only those go
    through the LM head: no full-vocabulary logits for masked positions.
    """
    import torch

    class _LossModule(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, source, target, weight, position_ids=None, attention_mask=None, bounds=None):
            decoder, head = model_parts(self.inner)
            extra = {"sftkit_bounds": bounds} if bounds is not None else {}
            hidden = decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                             use_cache=False, **extra).last_hidden_state
            picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, source)
            logits = head(picked).float()
            losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
            return (losses * weight).sum(), weight.sum()

    return _LossModule(model)


def batch_inputs(batch: dict, device: Any) -> dict:
    """The tensors of a collated batch on ``device`` (keyword arguments of the loss module)."""
    out = {}
    for key in ("input_ids", "source", "target", "weight", "position_ids", "attention_mask"):
        value = batch[key]
        out[key] = value.to(device) if value is not None else None
    out["bounds"] = batch["bounds"]
    return out


# -- data -------------------------------------------------------------------------------------

@dataclass
class TrainData:
    """Encoded training sources, eval samples and what the run folder records about them."""

    sources: list[Source]
    eval_samples: list[Sample]
    tokenizer: Any
    encoder: Any
    spec: Any
    template_name: str
    added_tokens: list[str]
    notes: list[str] = field(default_factory=list)
    eval_stats: dict = field(default_factory=dict)


def _source_stats(tokenized: list, samples: list[Sample], skipped: int) -> dict:
    lengths = [s.length for s in samples]
    return {
        "rows": len(tokenized) + skipped,
        "skipped_lines": skipped,
        "used": len(samples),
        "dropped_no_trained_tokens": len(tokenized) - len(samples),
        "truncated": sum(1 for t in tokenized if t.truncated),
        "tokens": int(sum(lengths)),
        "trained_tokens": int(sum(len(s.target) for s in samples)),
        "mean_length": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        "max_length": max(lengths) if lengths else 0,
    }


def load_data(recipe: Recipe) -> TrainData:
    """Open, map, render, mask and tokenize every ``--data`` source (and ``--eval-data``)."""
    from sftkit.pipeline import open_dataset, prepare

    common = dict(columns=[f"{k}={v}" for k, v in recipe.columns.items()],
                  instruction=recipe.instruction, loader=recipe.loader, loader_options=recipe.loader_options)
    sources, notes = [], []
    first = None
    for item in recipe.data:
        prepared = prepare(item.path, spec=item.spec or recipe.spec, **common, template=recipe.template, template_options=recipe.template_options,
                           masking=recipe.masking, masking_options=recipe.masking_options, model=recipe.model,
                           max_length=recipe.max_length, add_special_tokens=recipe.add_special_tokens,
                           trust_remote_code=recipe.trust_remote_code, skip_invalid=recipe.skip_invalid)
        if first is None:
            first = prepared
        elif prepared.template_name != first.template_name:
            raise UsageError(f"{item.path} renders with template {prepared.template_name!r} but {recipe.data[0].path} "
                             f"with {first.template_name!r}; one run trains one prompt format",
                             hint="set --template for all data")
        # Every source is encoded by the first source's encoder settings and tokenizer (one vocabulary).
        encoder = first.encoder if prepared is not first else prepared.encoder
        tokenized = encoder.encode_many(prepared.examples)
        samples = [to_sample(t) for t in tokenized]
        kept = [s for s in samples if len(s.target)]
        stats = _source_stats(tokenized, kept, len(prepared.skipped))
        stats["spec"] = prepared.spec.name
        stats["skipped"] = [{"line": e.line, "row": e.row, "message": e.message} for e in prepared.skipped]
        notes.append(f"{item.path}: {prepared.note}")
        notes.extend(f"skipped: {e.message}" for e in prepared.skipped)  # --skip-invalid lists what it left out
        if not kept:
            raise UsageError(f"{item.path}: no example has a trained token (masking {recipe.masking}, "
                             f"max length {recipe.max_length})", hint="check --masking and --max-length with sftkit preview")
        sources.append(Source(item.path, kept, item.weight, stats))
    eval_samples: list[Sample] = []
    eval_stats: dict = {}
    if recipe.eval_data:
        _, _, examples = open_dataset(recipe.eval_data, spec=recipe.spec or recipe.data[0].spec, **common)
        tokenized = first.encoder.encode_many(examples)
        eval_samples = [s for s in (to_sample(t) for t in tokenized) if len(s.target)]
        eval_stats = _source_stats(tokenized, eval_samples, 0)
    return TrainData(sources, eval_samples, first.tokenizer, first.encoder, first.spec, first.template_name,
                     list(first.added_tokens), notes, eval_stats)


def validate_data(recipe: Recipe, report_dir: Path) -> dict | None:
    """Run ``sftkit validate`` on each training file; errors abort with the report path."""
    try:
        from sftkit.validation import failed, run_validation
    except ImportError:  # validate not installed in this build
        return None
    from sftkit.registry import get_registry

    summaries = {}
    for index, item in enumerate(recipe.data):
        result = run_validation(
            item.path, spec=item.spec or recipe.spec, columns=[f"{k}={v}" for k, v in recipe.columns.items()],
            instruction=recipe.instruction, loader=recipe.loader, loader_options=recipe.loader_options,
            template=recipe.template, template_options=recipe.template_options, masking=recipe.masking,
            masking_options=recipe.masking_options, model=recipe.model, max_length=recipe.max_length,
            add_special_tokens=recipe.add_special_tokens,
            eval_data=recipe.eval_data if index == 0 else None, skip_invalid=recipe.skip_invalid)
        summaries[item.path] = result.data.get("summary", {})
        if failed(result, "error"):
            name = "validate.html" if len(recipe.data) == 1 else f"validate-{index}.html"
            path = get_registry().resolve("reporters", "html")(result, report_dir, name)
            errors = result.data["summary"].get("errors")
            raise ValidationFailed(f"{item.path}: validation found {errors} error(s); training did not start",
                                   hint=f"see the report {path}; fix the data, or pass --no-validate to train anyway")
    return summaries


# -- model ------------------------------------------------------------------------------------

def build_model(recipe: Recipe, tokenizer: Any, added_tokens: list[str]) -> Any:
    """The base model (embeddings grown for added tokens), wrapped with LoRA or fully trainable."""
    from sftkit.models import load_model

    model = load_model(recipe.model, dtype="float32", trust_remote_code=recipe.trust_remote_code)
    model.config.use_cache = False
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if recipe.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in recipe.target_modules if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise UsageError(f"target module(s) {', '.join(missing)} not found in {recipe.model}",
                         hint="linear modules of this model: " + ", ".join(linear))
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                        target_modules=list(recipe.target_modules), task_type="CAUSAL_LM",
                        modules_to_save=["embed_tokens", "lm_head"] if added_tokens else None,
                        ensure_weight_tying=bool(added_tokens) and tied)
    return get_peft_model(model, config)


def trainable_state(model: Any) -> dict:
    """The trainable parameters by name (what a checkpoint stores)."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def load_trainable(model: Any, weights: dict) -> None:
    """Copy checkpoint weights into the trainable parameters; every one must be present."""
    import torch

    params = trainable_state(model)
    if set(params) != set(weights):
        raise UsageError("the checkpoint does not fit this model (different method, LoRA settings or tokens)",
                         hint="resume with the same recipe as the interrupted run")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])


def make_scheduler(optimizer: Any, recipe: Recipe, total_steps: int) -> Any:
    """Cosine (default), linear or constant, after ``warmup_ratio`` of the steps."""
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    warmup = math.ceil(recipe.warmup_ratio * total_steps)
    if recipe.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if recipe.scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def mixed_precision(recipe: Recipe) -> str:
    """accelerate's mixed_precision: bf16/fp16 only where asked for or (auto) where the GPU supports it."""
    import torch

    if recipe.precision == "fp32":
        return "no"
    if recipe.precision in ("bf16", "fp16"):
        return recipe.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


# -- progress ---------------------------------------------------------------------------------

class Progress:
    """A Rich progress bar with loss, learning rate, tokens/s and ETA (or nothing)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        from sftkit.console import err_console

        self.bar = RichProgress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console, transient=False)
        self.task = self.bar.add_task("train", total=total, completed=start, loss="-", lr="-", speed="-")
        self.bar.start()

    def update(self, step: int, loss: float, lr: float, speed: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=f"{speed:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- the run ----------------------------------------------------------------------------------

@dataclass
class RunState:
    """Counters that a checkpoint carries besides the weights."""

    tokens: int = 0
    trained_tokens: int = 0
    train_seconds: float = 0.0
    best_eval: float | None = None
    bad_evals: int = 0
    stopped_early: bool = False


def _append_metrics(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=False) + "\n")
        handle.flush()


def _trim_metrics(path: Path, step: int) -> None:
    """Keep only complete metric lines up to ``step`` (after a crash, before resuming)."""
    from sftkit.io import atomic_write_text

    if not path.exists():
        return
    kept = []
    for line in path.read_text("utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl (incomplete lines skipped)."""
    out = []
    if path.exists():
        for line in path.read_text("utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def evaluate_loss(module: Any, samples: list[Sample], recipe: Recipe, pad_id: int, accelerator: Any) -> float:
    """Mean weighted loss over the eval samples (sharded across processes)."""
    import torch

    rank, world = accelerator.process_index, accelerator.num_processes
    mine = samples[rank::world]
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    module.eval()
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(mine), recipe.batch_size):
            batch = collate(mine[start:start + recipe.batch_size], packed=recipe.packing, pad_id=pad_id)
            loss_sum, weight_sum = module(**batch_inputs(batch, accelerator.device))
            total += torch.stack([loss_sum.double(), weight_sum.double()])
    module.train()
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def train(recipe: Recipe, *, resume: str | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> dict:
    """Train per ``recipe``; returns the result data (also written as report.html)."""
    import torch
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision(recipe))
    main = accelerator.is_main_process
    say = log if main else (lambda _msg: None)
    out = Path(recipe.run_dir())
    ckpt_dir = out / "checkpoints"
    metrics_path = out / "metrics.jsonl"

    claim = None
    if main:
        from sftkit.io import check_not_input, protect_inputs
        from sftkit.runs import claim_run_folder

        protect_inputs([d.path for d in recipe.data] + [recipe.eval_data, recipe.spec]
                       + [d.spec for d in recipe.data])
        check_not_input(out, "--output-dir", folder=True)
        claim = claim_run_folder(out)
    try:
        return _train_in(recipe, accelerator, out, resume, progress, say)
    finally:
        if claim is not None:
            claim.release()


def _train_in(recipe: Recipe, accelerator: Any, out: Path, resume: str | None, progress: bool,
              say: Callable[[str], None]) -> dict:
    """The run, once the run folder is claimed (see ``train``)."""
    import torch

    from sftkit import __version__
    from sftkit.checkpoints import clean_partial, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
    from sftkit.recipe import recipe_yaml
    from sftkit.runs import write_run

    main = accelerator.is_main_process
    ckpt_dir = out / "checkpoints"
    metrics_path = out / "metrics.jsonl"
    checkpoint = None
    if resume:
        checkpoint = latest_checkpoint(ckpt_dir) if resume == "latest" else Path(resume)
        if checkpoint is None:
            raise UsageError(f"--resume: no complete checkpoint in {ckpt_dir}",
                             hint="start without --resume, or pass a checkpoint folder")
    elif main and out.exists() and ((out / "sftkit_run.json").exists() or list(ckpt_dir.glob("checkpoint-*"))):
        if not recipe.overwrite:
            raise UsageError(f"{out} already holds a run",
                             hint="pass --resume to continue it, --overwrite to replace it, or another --output-dir")
    if main:
        if recipe.overwrite and not resume:
            import shutil

            shutil.rmtree(ckpt_dir, ignore_errors=True)
            for name in ("sftkit_run.json", "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
        removed = clean_partial(ckpt_dir)
        if removed:
            say(f"removed {len(removed)} incomplete checkpoint folder(s) left by a crash")
    accelerator.wait_for_everyone()

    validation = None
    if recipe.validate and main:
        validation = validate_data(recipe, out)
        if validation is None:
            say("note: validation is not available in this build; training without it")
    accelerator.wait_for_everyone()

    data = load_data(recipe)
    tokenizer = data.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for note in data.notes:
        say(note)

    torch.manual_seed(recipe.seed)
    model = build_model(recipe, tokenizer, data.added_tokens)
    packed_kernel = recipe.packing and use_packed_attention(model.get_base_model() if recipe.method == "lora" else model)
    schedule = Schedule(data.sources, batch_size=recipe.batch_size, grad_accum=recipe.grad_accum,
                        world=accelerator.num_processes, seed=recipe.seed)
    total_steps = recipe.max_steps or schedule.steps_for(recipe.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate(), weight_decay=recipe.weight_decay)
    scheduler = make_scheduler(optimizer, recipe, total_steps)
    module = make_loss_module(model)
    module, optimizer = accelerator.prepare(module, optimizer)
    module.train()

    state = RunState()
    start = 0
    if checkpoint is not None:
        weights, saved, trainer_state = load_checkpoint(checkpoint)
        load_trainable(model, weights)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng(saved)
        start = int(trainer_state["step"])
        if trainer_state.get("total_steps") != total_steps:
            raise UsageError(f"the checkpoint was made for {trainer_state.get('total_steps')} steps, this recipe "
                             f"gives {total_steps}", hint="resume with the same recipe (data, epochs, max steps, batch)")
        state = RunState(**trainer_state["run_state"])
        if main:
            _trim_metrics(metrics_path, start)
        say(f"resuming from {checkpoint} at step {start} of {total_steps}")
    elif main and metrics_path.exists():
        metrics_path.unlink()
    if main:
        from sftkit.io import atomic_write_text

        atomic_write_text(out / "recipe.yaml", recipe_yaml(recipe))

    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in model.parameters())
    if not getattr(data.encoder.template, "jinja", None) and data.template_name != "chat_template":
        say(f"note: template {data.template_name!r} has no Jinja form, so the saved tokenizer keeps the base model's "
            f"chat template; prompt the tuned model with sftkit (eval uses the training template)")
    say(f"training {recipe.model} ({recipe.method}, {n_trainable:,} of {n_total:,} parameters trainable) "
        f"for {total_steps} steps; {sum(len(s.samples) for s in data.sources)} examples, "
        f"{'padding-free packing' if recipe.packing else 'padded batches'}; run folder {out}")

    bar = Progress(total_steps, start, progress and main)
    step = start
    try:
        for step in range(start + 1, total_steps + 1):
            began = time.perf_counter()
            micro = [collate(group, packed=recipe.packing, pad_id=pad_id)
                     for m in schedule.micro_batches(step - 1, accelerator.process_index)
                     for group in split_by_tokens(m, recipe.max_tokens_per_forward)]
            step_weight = float(sum(b["weight"].sum() for b in micro))
            sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
            for index, batch in enumerate(micro):
                sync = index == len(micro) - 1
                with (nullcontext() if sync else accelerator.no_sync(module)), accelerator.autocast():
                    loss_sum, weight_sum = module(**batch_inputs(batch, accelerator.device))
                    accelerator.backward(loss_sum / max(step_weight, 1e-12))
                sums += torch.tensor([float(loss_sum.detach()), float(weight_sum), batch["tokens"], len(batch["target"])],
                                     dtype=torch.float64, device=accelerator.device)
            grad_norm = accelerator.clip_grad_norm_(params, recipe.max_grad_norm) if recipe.max_grad_norm else None
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            per_rank = accelerator.gather(sums[3:4].clone())
            sums = accelerator.reduce(sums, reduction="sum")
            seconds = time.perf_counter() - began
            loss = float(sums[0] / sums[1])
            if not math.isfinite(loss):
                raise SftkitError(f"the loss became {loss} at step {step}",
                                  hint="lower --lr, or use --precision fp32")
            state.tokens += int(sums[2])
            state.trained_tokens += int(sums[3])
            state.train_seconds += seconds
            record = {"step": step, "epoch": round(schedule.epoch_at(step), 4), "loss": loss, "lr": lr,
                      "grad_norm": float(grad_norm) if grad_norm is not None else None,
                      "tokens": int(sums[2]), "trained_tokens": int(sums[3]), "seconds": round(seconds, 4),
                      "tokens_per_s": round(sums[2].item() / seconds, 1),
                      "trained_tokens_per_s": round(sums[3].item() / seconds, 1),
                      "rank_trained_tokens": [int(v) for v in per_rank.tolist()]}
            if main and (step % recipe.logging_steps == 0 or step == total_steps):
                _append_metrics(metrics_path, record)
            bar.update(step, loss, lr, state.tokens / max(state.train_seconds, 1e-9))
            if os.environ.get("SFTKIT_TEST_STEP_SLEEP"):
                time.sleep(float(os.environ["SFTKIT_TEST_STEP_SLEEP"]))
            evaluate_now = data.eval_samples and recipe.eval_steps and step % recipe.eval_steps == 0
            if evaluate_now or (data.eval_samples and step == total_steps):
                eval_loss = evaluate_loss(module, data.eval_samples, recipe, pad_id, accelerator)
                if main:
                    _append_metrics(metrics_path, {"step": step, "eval_loss": eval_loss})
                if state.best_eval is None or eval_loss < state.best_eval:
                    state.best_eval, state.bad_evals = eval_loss, 0
                else:
                    state.bad_evals += 1
                if recipe.early_stopping_patience and state.bad_evals >= recipe.early_stopping_patience:
                    state.stopped_early = True
                    say(f"early stopping at step {step}: eval loss did not improve for {state.bad_evals} evaluations")
            if step % recipe.save_steps == 0 and step < total_steps and not state.stopped_early:
                accelerator.wait_for_everyone()
                if main:
                    save_checkpoint(ckpt_dir, step, trainable_state(model), optimizer, scheduler,
                                    {"total_steps": total_steps, "run_state": state.__dict__}, recipe.save_total_limit)
                accelerator.wait_for_everyone()
            if state.stopped_early:
                break
    finally:
        bar.close()

    accelerator.wait_for_everyone()
    # Data-parallel replicas must hold the same weights: compare a checksum across processes.
    checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1).to(accelerator.device)
    checksums = accelerator.gather(checksum)
    in_sync = bool((checksums - checksums[0]).abs().max() <= 1e-6 * max(1.0, float(checksums[0].abs())))
    result = None
    if main:
        if packed_kernel:
            (model.get_base_model() if recipe.method == "lora" else model).set_attn_implementation("sdpa")
        save_final(model, tokenizer, data, recipe, out)
        metrics = read_metrics(metrics_path)
        result = build_result(recipe, data, metrics, state, step, total_steps, n_trainable, n_total, validation, out)
        result["summary"].update(processes=accelerator.num_processes, replicas_in_sync=in_sync)
        from sftkit.io import atomic_write_json
        from sftkit.registry import get_registry

        get_registry().resolve("reporters", "html")(_as_result(result), out, "report.html")
        atomic_write_json(out / "train.json", result)
        write_run(out, {
            "sftkit_version": __version__, "base_model": recipe.model, "method": recipe.method,
            "template": data.template_name, "template_options": recipe.template_options,
            "masking": recipe.masking, "masking_options": recipe.masking_options,
            "spec": data.spec.to_dict(), "max_length": recipe.max_length, "added_tokens": data.added_tokens,
            "recipe": recipe.to_dict(),
        })
    accelerator.wait_for_everyone()
    return result or {}


def save_final(model: Any, tokenizer: Any, data: TrainData, recipe: Recipe, out: Path) -> None:
    """Save the adapter or full model and the tokenizer (chat template = the training template)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-final-", dir=out))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)  # a PEFT adapter, or the full model
        jinja = getattr(data.encoder.template, "jinja", None)
        if jinja:
            tokenizer.chat_template = jinja
        tokenizer.save_pretrained(str(tmp))
        for child in tmp.iterdir():
            if child.is_file():
                os.replace(child, out / child.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_result(recipe: Recipe, data: TrainData, metrics: list[dict], state: RunState, step: int, total_steps: int,
                 n_trainable: int, n_total: int, validation: dict | None, out: Path) -> dict:
    """The result data of a run (report.html and train.json)."""
    train_lines = [m for m in metrics if "loss" in m]
    eval_lines = [m for m in metrics if "eval_loss" in m]
    return {
        "run_dir": str(out),
        "summary": {
            "model": recipe.model, "method": recipe.method, "steps": step, "planned_steps": total_steps,
            "first_loss": train_lines[0]["loss"] if train_lines else None,
            "final_loss": train_lines[-1]["loss"] if train_lines else None,
            "best_eval_loss": state.best_eval, "stopped_early": state.stopped_early,
            "tokens": state.tokens, "trained_tokens": state.trained_tokens,
            "train_seconds": round(state.train_seconds, 2),
            "tokens_per_s": round(state.tokens / max(state.train_seconds, 1e-9), 1),
            "trained_tokens_per_s": round(state.trained_tokens / max(state.train_seconds, 1e-9), 1),
            "trainable_parameters": n_trainable, "parameters": n_total,
            "template": data.template_name, "masking": recipe.masking, "packing": recipe.packing,
        },
        "settings": recipe.to_dict(),
        "data": [{"path": s.name, "weight": s.weight, **s.stats} for s in data.sources],
        "eval_data": {"path": recipe.eval_data, **data.eval_stats} if recipe.eval_data else None,
        "added_tokens": data.added_tokens,
        "validation": validation,
        "metrics": train_lines,
        "eval_metrics": eval_lines,
    }


def _as_result(data: dict) -> Any:
    from sftkit.types import Result

    return Result("train", f"sftkit train: {data['summary']['model']} ({data['summary']['method']})", data)
