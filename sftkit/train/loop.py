"""The run: claim the run folder, prepare the data, build the model, step, evaluate, checkpoint,
save, report. ``train(recipe)`` is the whole of ``sftkit train`` below the command line.

``accelerate`` supplies the process group for ``accelerate launch`` / ``torchrun`` (DDP, or
FSDP / DeepSpeed from an accelerate config), mixed precision on GPUs, gradient
synchronisation and the checkpoint state. The data order is a pure function of the seed and
the step, so a resumed run sees exactly the batches it would have seen. Each step's loss is
divided by the trained-token weight of the whole step over every process, so the gradient
does not depend on how many processes share the batch.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sftkit.errors import SftkitError, UsageError, WriteError
from sftkit.recipe import MAX_STEPS, Recipe
from sftkit.runs import RUN_FILE
from sftkit.train.data import Schedule, collate, collate_seq2seq, split_by_tokens
from sftkit.train.run_files import METRICS_FILE, RunState
from sftkit.train.sources import TrainData
from sftkit.train.trackers import Trackers, start_trackers


@dataclass
class Run:
    """What one training run holds while it trains."""

    recipe: Recipe
    accelerator: Any
    out: Path
    data: TrainData
    model: Any
    module: Any  # the loss module, wrapped by accelerate
    optimizer: Any
    scheduler: Any
    schedule: Schedule
    params: list
    total_steps: int
    kernel: str | None  # the packed-attention kernel (None: padded batches)
    say: Callable[[str], None]
    parameters: tuple[int, int] = (0, 0)  # trainable, total (counted before any sharding)
    own_attention: str = "sdpa"  # the model's attention implementation before packing switched it
    decoder_start: int | None = None  # an encoder-decoder model: its decoder start token (None: decoder-only)
    state: RunState = field(default_factory=RunState)
    start: int = 0
    step: int = 0
    trackers: Trackers = field(default_factory=Trackers)  # report_to: started when the steps start

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def metrics_path(self) -> Path:
        return self.out / METRICS_FILE

    @property
    def packing(self) -> bool:
        return self.kernel is not None

    @property
    def pad_id(self) -> int:
        tokenizer = self.data.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def collate(self, samples: list) -> dict:
        """One micro-batch's tensors: packed or padded, or padded per side for an encoder-decoder."""
        if self.decoder_start is not None:
            return collate_seq2seq(samples, pad_id=self.pad_id, start_id=self.decoder_start)
        return collate(samples, packed=self.packing, pad_id=self.pad_id)


def train(recipe: Recipe, *, resume: str | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> dict:
    """Train per ``recipe``; returns the result data (also handed to the reporters)."""
    import torch
    from accelerate import Accelerator

    from sftkit.io import check_not_input, check_writable_dir, protect_inputs
    from sftkit.runs import claim_run_folder
    from sftkit.train.attention import choose_kernel
    from sftkit.train.model import mixed_precision, quantization_config

    _release_precision(mixed_precision(recipe))
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision(recipe))
    quantization_config(recipe, accelerator.device)  # what the run needs is checked before any work
    if recipe.packing:
        choose_kernel(recipe.attention, accelerator.device)
    say = log if accelerator.is_main_process else (lambda _msg: None)
    if not torch.cuda.is_available():
        from sftkit.threads import configure

        say(configure())
    out = Path(recipe.run_dir())
    claim = None
    if accelerator.is_main_process:
        protect_inputs([d.path for d in recipe.data] + [d.spec for d in recipe.data] + [recipe.eval_data, recipe.spec])
        check_not_input(out, "--output-dir", folder=True)
        claim = claim_run_folder(out)  # refuses a file, a foreign folder, a folder in use
    try:
        if claim is not None:
            check_writable_dir(out, "--output-dir")  # a full disk or a read-only folder: one message now
        checkpoint = _start_folder(recipe, accelerator, out, resume, say)
        run = _setup(recipe, accelerator, out, say)
        _restore_or_start(run, checkpoint)
        try:
            _train_steps(run, progress)
        except WriteError as exc:  # a checkpoint or metrics.jsonl on a full disk: how to go on from here
            raise _unfinished(out, exc) from None
        return _finish(run)
    finally:
        if claim is not None:
            claim.release()


def _release_precision(wanted: str) -> None:
    """Let a second ``train`` in one process (tests, notebooks, ``sftkit.testing.run_cli``) use another
    precision: accelerate keeps the first run's mixed precision process-wide and refuses a change
    (a ValueError, exit 3). Only the precision state is dropped; the process group stays."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, wanted):
        AcceleratorState._reset_state()


def _start_folder(recipe: Recipe, accelerator: Any, out: Path, resume: str | None,
                  say: Callable[[str], None]) -> Path | None:
    """The checkpoint to resume from (or None), after checking the folder may be (re)used."""
    from sftkit.train.checkpoints import clean_partial, resolve_resume

    ckpt_dir = out / "checkpoints"
    checkpoint = None
    if resume:
        checkpoint = resolve_resume(ckpt_dir, resume, say)
    elif accelerator.is_main_process and ((out / "sftkit_run.json").exists() or list(ckpt_dir.glob("checkpoint-*"))):
        if not recipe.overwrite:
            raise UsageError(f"{out} already holds a run",
                             hint="pass --resume to continue it, --overwrite to replace it, or another --output-dir")
    if accelerator.is_main_process:
        if recipe.overwrite and not resume:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            for name in ("sftkit_run.json", METRICS_FILE):
                (out / name).unlink(missing_ok=True)
        removed = clean_partial(ckpt_dir)
        if removed:
            say(f"removed {len(removed)} incomplete checkpoint folder(s) left by a crash")
    accelerator.wait_for_everyone()
    return checkpoint


def _setup(recipe: Recipe, accelerator: Any, out: Path, say: Callable[[str], None]) -> Run:
    """Data (validated and encoded once, by the main process first), model, kernel, schedule,
    optimizer and loss module."""
    import torch

    from sftkit.train.checkpoints import only_trainable_hook
    from sftkit.train.distributed import configure_deepspeed, main_first
    from sftkit.train.loss import make_loss_module
    from sftkit.train.model import base_of, build_model, model_device_map
    from sftkit.train.optim import make_optimizer, make_scheduler
    from sftkit.train.sources import load_training_data

    with main_first(accelerator) as main:  # the others then read the main process's Arrow cache
        data = load_training_data(recipe, validate=recipe.validate and main, report_dir=out, write_reports=main)
    for note in data.notes:
        say(note)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe, data.tokenizer, data.added_tokens, device=accelerator.device,
                        device_map=model_device_map(accelerator))
    own_attention = getattr(base_of(model).config, "_attn_implementation", None) or "sdpa"
    decoder_start = _decoder_start(base_of(model).config, data.tokenizer)
    if decoder_start is not None and recipe.packing:
        say("note: an encoder-decoder model trains on batches padded per side (encoder input, decoder target), "
            "never packed")
    kernel = _packed_kernel(recipe, model, accelerator.device, say) if decoder_start is None else None
    schedule = Schedule(data.sources, batch_size=recipe.batch_size, grad_accum=recipe.grad_accum,
                        world=accelerator.num_processes, seed=recipe.seed)
    total_steps = recipe.max_steps or schedule.steps_for(recipe.epochs)
    if total_steps > MAX_STEPS:
        raise UsageError(f"epochs {recipe.epochs:g} of {schedule.epoch_size:,} examples make {total_steps:,} optimizer "
                         f"steps, more than the limit of {MAX_STEPS:,}", hint="lower epochs, or set max_steps")
    params = [p for p in model.parameters() if p.requires_grad]
    parameters = (sum(p.numel() for p in params), sum(p.numel() for p in model.parameters()))
    optimizer = make_optimizer(params, recipe)
    scheduler = make_scheduler(optimizer, recipe, total_steps)
    configure_deepspeed(accelerator, recipe)
    module, optimizer = accelerator.prepare(make_loss_module(model), optimizer)
    accelerator.register_save_state_pre_hook(only_trainable_hook)
    module.train()
    return Run(recipe, accelerator, out, data, model, module, optimizer, scheduler, schedule, params, total_steps,
               kernel, say, parameters, own_attention, decoder_start)


def _decoder_start(config: Any, tokenizer: Any) -> int | None:
    """The token an encoder-decoder model's decoder starts from (its config's, else the pad
    token); None for a decoder-only model."""
    if not getattr(config, "is_encoder_decoder", False):
        return None
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return int(start)


def _packed_kernel(recipe: Recipe, model: Any, device: Any, say: Callable[[str], None]) -> str | None:
    """The attention kernel packed batches run with, or None (padded batches): without packing,
    or when this model cannot use the kernel (said, and the run goes on padded)."""
    from sftkit.train.attention import choose_kernel, use_kernel
    from sftkit.train.model import base_of

    if not recipe.packing:
        return None
    kernel = choose_kernel(recipe.attention, device)
    reason = use_kernel(base_of(model), kernel)
    if reason:
        say(f"note: {reason}; training on padded batches instead")
        return None
    return kernel


def _restore_or_start(run: Run, checkpoint: Path | None) -> None:
    """Load a checkpoint's weights, optimizer, RNG, scheduler and counters (every process through
    ``accelerator.load_state``), or start afresh; then write the resolved recipe and say what is
    about to train."""
    from sftkit.io import atomic_write_text
    from sftkit.recipe import recipe_yaml
    from sftkit.train.checkpoints import load_checkpoint
    from sftkit.train.run_files import trim_metrics

    if checkpoint is not None:
        trainer_state = load_checkpoint(run.accelerator, run.module, checkpoint, _load_kwargs(run))
        run.start = run.step = int(trainer_state["step"])
        if trainer_state.get("total_steps") != run.total_steps:
            raise UsageError(f"the checkpoint was made for {trainer_state.get('total_steps')} steps, this recipe "
                             f"gives {run.total_steps}",
                             hint="resume with the same recipe (data, epochs, max steps, batch)")
        run.scheduler.load_state_dict(trainer_state["scheduler"])
        run.state = RunState(**trainer_state["run_state"])
        if run.main:
            trim_metrics(run.metrics_path, run.start)
        run.say(f"resuming from {checkpoint} at step {run.start} of {run.total_steps}")
    elif run.main and run.metrics_path.exists():
        run.metrics_path.unlink()
    if run.main:
        atomic_write_text(run.out / "recipe.yaml", recipe_yaml(run.recipe))
    _announce(run)


def _load_kwargs(run: Run) -> dict:
    """``accelerator.load_state`` keywords: optimizer state read onto the CPU first (then moved to
    each parameter's device by the optimizer), model file holding only the trainable weights;
    under DeepSpeed its own loader, without the frozen parameters of a LoRA run."""
    from sftkit.train.distributed import is_deepspeed

    if is_deepspeed(run.accelerator):
        return {"load_module_strict": False} if run.recipe.method == "lora" else {}
    return {"map_location": "cpu", "strict": False}


def _save_kwargs(run: Run) -> dict:
    from sftkit.train.distributed import is_deepspeed

    if is_deepspeed(run.accelerator) and run.recipe.method == "lora":
        return {"exclude_frozen_parameters": True}
    return {}


def _announce(run: Run) -> None:
    from sftkit.runs import template_jinja

    recipe, prepared = run.recipe, run.data.prepared
    n_trainable, n_total = run.parameters
    if template_jinja(prepared.encoder.template) is None and prepared.template_name != "chat_template":
        run.say(f"note: template {prepared.template_name!r} has no Jinja form, so the saved tokenizer keeps the base "
                f"model's chat template; prompt the tuned model with sftkit (eval uses the training template)")
    run.say(f"training {recipe.model} ({recipe.method}, {n_trainable:,} of {n_total:,} parameters trainable) "
            f"for {run.total_steps} steps; {sum(len(s.samples) for s in run.data.sources)} examples, "
            f"{f'padding-free packing ({run.kernel} attention)' if run.packing else _padding(run)}"
            f"{', gradient checkpointing' if recipe.gradient_checkpointing else ''}"
            f"{f', {recipe.quantize} base' if recipe.quantize else ''}; run folder {run.out}")


def _padding(run: Run) -> str:
    return "batches padded per side (encoder-decoder)" if run.decoder_start is not None else "padded batches"


def _train_steps(run: Run, progress: bool) -> None:
    """Step from where the run starts to the end (or an early stop), with metrics, evaluation
    and checkpoints along the way."""
    from sftkit.train.progress import Progress
    from sftkit.train.run_files import append_metrics

    recipe = run.recipe
    run.trackers = start_trackers(recipe, run.out, main=run.main, start_step=run.start)
    bar = Progress(run.total_steps, run.start, progress and run.main)
    try:
        for step in range(run.start + 1, run.total_steps + 1):
            run.step = step
            record = train_step(run, step)
            if run.main and (step % recipe.logging_steps == 0 or step == run.total_steps):
                append_metrics(run.metrics_path, record)
                run.trackers.log(record)
            bar.update(step, record["loss"], record["lr"], run.state.tokens / max(run.state.train_seconds, 1e-9))
            if os.environ.get("SFTKIT_TEST_STEP_SLEEP"):
                time.sleep(float(os.environ["SFTKIT_TEST_STEP_SLEEP"]))
            _maybe_evaluate(run, step)
            if step % recipe.save_steps == 0 and step < run.total_steps and not run.state.stopped_early:
                _checkpoint(run, step)
            if run.state.stopped_early:
                break
    finally:
        bar.close()
        run.trackers.close()


def train_step(run: Run, step: int) -> dict:
    """One optimizer step: this process's micro-batches (split into passes of at most
    ``max_tokens_per_forward`` tokens), gradients, clipping, the update; returns its metrics.

    Every pass's loss sum is divided by the trained-token weight of the whole step summed over
    all processes, times the number of processes (DDP, FSDP and DeepSpeed average gradients
    over processes): the gradient is that of the global mean loss, whatever the world size.
    """
    import torch

    from sftkit.train.distributed import accumulating, world_sum
    from sftkit.train.loss import batch_inputs

    recipe, accelerator, state = run.recipe, run.accelerator, run.state
    began = time.perf_counter()
    micro = [run.collate(group)
             for m in run.schedule.micro_batches(step - 1, accelerator.process_index)
             for group in split_by_tokens(m, recipe.max_tokens_per_forward)]
    step_weight = world_sum(accelerator, float(sum(b["weight"].sum() for b in micro)))
    scale = accelerator.num_processes / max(step_weight, 1e-12)
    sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)
    for index, batch in enumerate(micro):
        with accumulating(accelerator, run.module, sync=index == len(micro) - 1), accelerator.autocast():
            loss_sum, weight_sum = run.module(**batch_inputs(batch, accelerator.device, run.kernel))
            accelerator.backward(loss_sum * scale)
        sums += torch.stack([loss_sum.detach().double(), weight_sum.detach().double(),
                             torch.tensor(float(batch["tokens"]), dtype=torch.float64, device=accelerator.device),
                             torch.tensor(float(len(batch["target"])), dtype=torch.float64, device=accelerator.device)])
    # All of the prepared module's parameters: accelerate's FSDP branch recognises its own model.
    grad_norm = accelerator.clip_grad_norm_(run.module.parameters(), recipe.max_grad_norm) \
        if recipe.max_grad_norm else None
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    per_rank = accelerator.gather(sums[3:4].clone())
    sums = accelerator.reduce(sums, reduction="sum")
    seconds = time.perf_counter() - began
    loss = float(sums[0] / sums[1])
    if not math.isfinite(loss):
        raise SftkitError(f"the loss became {loss} at step {step}", hint="lower --lr, or use --precision fp32")
    state.tokens += int(sums[2])
    state.trained_tokens += int(sums[3])
    state.train_seconds += seconds
    return {"step": step, "epoch": round(run.schedule.epoch_at(step), 4), "loss": loss, "lr": lr,
            "grad_norm": _as_float(grad_norm),
            "tokens": int(sums[2]), "trained_tokens": int(sums[3]), "seconds": round(seconds, 4),
            "tokens_per_s": round(sums[2].item() / seconds, 1),
            "trained_tokens_per_s": round(sums[3].item() / seconds, 1),
            "rank_trained_tokens": [int(v) for v in per_rank.tolist()]}


def _as_float(value: Any) -> float | None:
    """A gradient norm as a float (a DTensor under FSDP2 is gathered first)."""
    if value is None:
        return None
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    return float(value)


def _maybe_evaluate(run: Run, step: int) -> None:
    """The eval loss every ``eval_steps`` and at the end; early stopping on it."""
    from sftkit.train.run_files import append_metrics

    recipe, state = run.recipe, run.state
    if not run.data.eval_samples:
        return
    if not ((recipe.eval_steps and step % recipe.eval_steps == 0) or step == run.total_steps):
        return
    eval_loss = evaluate_loss(run)
    if run.main:
        append_metrics(run.metrics_path, {"step": step, "eval_loss": eval_loss})
        run.trackers.log({"step": step, "eval_loss": eval_loss})
    if state.best_eval is None or eval_loss < state.best_eval:
        state.best_eval, state.bad_evals = eval_loss, 0
    else:
        state.bad_evals += 1
    if recipe.early_stopping_patience and state.bad_evals >= recipe.early_stopping_patience:
        state.stopped_early = True
        run.say(f"early stopping at step {step}: eval loss did not improve for {state.bad_evals} evaluations")


def evaluate_loss(run: Run) -> float:
    """Mean weighted loss over the eval samples (sharded across processes)."""
    import torch

    from sftkit.train.loss import batch_inputs

    accelerator, recipe = run.accelerator, run.recipe
    mine = run.data.eval_samples[accelerator.process_index::accelerator.num_processes]
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    run.module.eval()
    with torch.no_grad(), accelerator.autocast():
        for start in range(0, len(mine), recipe.batch_size):
            batch = run.collate(mine[start:start + recipe.batch_size])
            loss_sum, weight_sum = run.module(**batch_inputs(batch, accelerator.device, run.kernel))
            total += torch.stack([loss_sum.double(), weight_sum.double()])
    run.module.train()
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def _checkpoint(run: Run, step: int) -> None:
    from sftkit.train.checkpoints import save_checkpoint

    state = {"total_steps": run.total_steps, "run_state": run.state.__dict__, "scheduler": run.scheduler.state_dict(),
             "processes": run.accelerator.num_processes, "engine": str(run.accelerator.distributed_type)}
    save_checkpoint(run.accelerator, run.out / "checkpoints", step, state, run.recipe.save_total_limit,
                    _save_kwargs(run))


def _finish(run: Run) -> dict:
    """Check the replicas agree, gather and save the weights, and hand the result to the reporters."""
    from sftkit.card import write_card
    from sftkit.reporting import choose_reporters, write_reports
    from sftkit.runs import write_run
    from sftkit.train.distributed import is_sharded
    from sftkit.train.model import base_of
    from sftkit.train.run_files import build_result, final_state_dict, read_metrics, run_description, save_final
    from sftkit.types import Result

    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    in_sync = None if is_sharded(accelerator) else _replicas_in_sync(run)
    state_dict = final_state_dict(accelerator, run.module, run.recipe.method)  # every process: a collective
    result: dict = {}
    if run.main:
        if run.kernel is not None:  # the saved model carries its own attention, not the training kernel
            base_of(run.model).set_attn_implementation(run.own_attention)
        prepared = run.data.prepared
        # Until sftkit_run.json is written again the folder is not a finished run (a resumed run
        # replaces the weights of an earlier finish): nothing may read old and new files as one.
        (run.out / RUN_FILE).unlink(missing_ok=True)
        try:
            save_final(run.model, prepared.tokenizer, prepared.encoder.template, run.out, state_dict)
            result = build_result(run.recipe, run.data, read_metrics(run.metrics_path), run.state, run.step,
                                  run.total_steps, run.parameters, run.out)
            result["summary"].update(processes=accelerator.num_processes, replicas_in_sync=in_sync,
                                     engine=str(accelerator.distributed_type).rsplit(".", 1)[-1].lower(),
                                     device=accelerator.device.type, attention=run.kernel or "padded",
                                     **_memory(accelerator))
            title = f"sftkit train: {run.recipe.model} ({run.recipe.method})"
            chosen = choose_reporters(prepared.registry, run.recipe.reporters or (), run.recipe.no_reporters)
            # min_free=0: the folder was checked before training; only a write that fails now is an error
            write_reports(Result("train", title, result), run.out, prepared.registry, reporters=chosen,
                          flag="--output-dir", min_free=0)
            write_run(run.out, run_description(run.recipe, run.data))
        except WriteError as exc:
            raise _unfinished(run.out, exc) from None
        write_card(run.out, result)  # README.md: the model card
    accelerator.wait_for_everyone()
    return result


def _unfinished(out: Path, exc: WriteError) -> WriteError:
    """A write of the finished run that failed: the folder is not a finished run, and how to finish it."""
    from sftkit.train.checkpoints import list_checkpoints

    found = list_checkpoints(out / "checkpoints")
    then = (f"then `sftkit train --output-dir {out} --resume` finishes the run from {found[-1][1].name}" if found else
            f"then train again (`--output-dir {out} --overwrite`); the run kept no checkpoint to finish from")
    error = WriteError(f"{exc.message}; the run folder {out} is not a finished run (no {RUN_FILE})", path=exc.path,
                       hint=f"{exc.hint or 'free some space'}; {then}")
    error.kept, error.replaced = exc.kept, exc.replaced
    return error


def _replicas_in_sync(run: Run) -> bool:
    """Data-parallel replicas must hold the same weights: a checksum compared across processes."""
    import torch

    accelerator = run.accelerator
    params = [p for p in run.module.parameters() if p.requires_grad]
    checksum = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1).to(accelerator.device)
    checksums = accelerator.gather(checksum)
    return bool((checksums - checksums[0]).abs().max() <= 1e-6 * max(1.0, float(checksums[0].abs())))


def _memory(accelerator: Any) -> dict:
    """Peak GPU memory of this (main) process, when it ran on a GPU."""
    import torch

    if accelerator.device.type != "cuda":
        return {}
    return {"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(accelerator.device) / 2**30, 3)}
