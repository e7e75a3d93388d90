"""The files of a run folder written during and after training: metrics.jsonl, the final weights
and tokenizer, the result handed to the reporters (train.html, train.json) and sftkit_run.json."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftkit.recipe import Recipe

METRICS_FILE = "metrics.jsonl"


@dataclass
class RunState:
    """Counters that a checkpoint carries besides the weights."""

    tokens: int = 0
    trained_tokens: int = 0
    train_seconds: float = 0.0
    best_eval: float | None = None
    bad_evals: int = 0
    stopped_early: bool = False


def append_metrics(path: Path, record: dict) -> None:
    """Append one line to metrics.jsonl (flushed: a crash or a full disk loses at most the line
    being written, which ``read_metrics`` and ``trim_metrics`` skip); a failed write is one
    WriteError naming the file."""
    from sftkit.io import writing

    with writing(path, "metrics log"), open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=False) + "\n")
        handle.flush()


def trim_metrics(path: Path, step: int) -> None:
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


def final_state_dict(accelerator: Any, module: Any, method: str) -> dict | None:
    """The trained weights gathered for the final save, named as in the model inside the loss
    module; None where every process already holds them whole (one process, DDP).

    Every process must call it (a collective under FSDP and DeepSpeed ZeRO-3): accelerate's
    ``get_state_dict`` (the main process receives the full state dict, on the CPU); a LoRA run
    under FSDP2 gathers only the trainable (adapter) weights, not the frozen base.
    """
    from sftkit.train.distributed import is_sharded

    if not is_sharded(accelerator):
        return None
    if method == "lora" and getattr(accelerator, "is_fsdp2", False):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        state = get_model_state_dict(accelerator.unwrap_model(module), options=options)
    else:
        state = accelerator.get_state_dict(module)
    prefix = "inner."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in (state or {}).items()}


def save_final(model: Any, tokenizer: Any, template: Any, out: Path, state_dict: dict | None = None) -> None:
    """Save the adapter or full model and the tokenizer (chat template = the training template,
    rendered for the options the run trained with: ``sftkit.runs.template_jinja``); ``state_dict``:
    the gathered weights (sharded engines), else the model's own."""
    import shutil
    import tempfile

    from sftkit.io import default_mode, writing
    from sftkit.runs import template_jinja

    with writing(out, "run folder"):
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-final-", dir=out))
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    try:
        # A full disk (torch, safetensors or tokenizers failing to write) is one WriteError; the
        # temporary folder goes, and nothing has been moved into the run folder yet.
        with writing(out, "final model", partial=tmp):
            model.save_pretrained(str(tmp), safe_serialization=True, **extra)  # a PEFT adapter, or the full model
            jinja = template_jinja(template)
            if jinja:
                tokenizer.chat_template = jinja
            tokenizer.save_pretrained(str(tmp))
            for child in tmp.iterdir():
                if child.is_file():  # on the disk before sftkit_run.json says the run is finished
                    _fsync(child)
        for child in tmp.iterdir():
            if child.is_file() and child.name != "README.md":  # PEFT's empty card: sftkit.card writes the card
                os.chmod(child, default_mode())  # safetensors creates its files private (0600)
                os.replace(child, out / child.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_result(recipe: Recipe, data: Any, metrics: list[dict], state: RunState, step: int, total_steps: int,
                 parameters: tuple[int, int], out: Path) -> dict:
    """The result data of a run (what the reporters write: train.html, train.json)."""
    train_lines = [m for m in metrics if "loss" in m]
    eval_lines = [m for m in metrics if "eval_loss" in m]
    prepared = data.prepared
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
            "trainable_parameters": parameters[0], "parameters": parameters[1],
            "template": prepared.template_name, "masking": prepared.masking_name, "packing": recipe.packing,
        },
        "settings": recipe.to_dict(),
        "data": [{"path": s.name, "weight": s.weight, **s.stats} for s in data.sources],
        "eval_data": {"path": recipe.eval_data, **data.eval_stats} if recipe.eval_data else None,
        "added_tokens": data.added_tokens,
        "validation": data.validation,
        "metrics": train_lines,
        "eval_metrics": eval_lines,
    }


def run_description(recipe: Recipe, data: Any) -> dict:
    """What ``sftkit_run.json`` records (``sftkit.runs.RUN_KEYS``): how the model was trained."""
    from sftkit import __version__

    prepared = data.prepared
    return {
        "sftkit_version": __version__, "base_model": recipe.model, "method": recipe.method,
        "template": prepared.template_name, "template_options": recipe.template_options,
        "masking": prepared.masking_name, "masking_options": recipe.masking_options,
        "spec": prepared.spec.to_dict(), "max_length": recipe.max_length, "added_tokens": data.added_tokens,
        "recipe": recipe.to_dict(),
    }
