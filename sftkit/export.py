"""``sftkit export RUN_DIR OUT_DIR``: a run as a plain transformers model folder.

A LoRA run is loaded as ``sftkit eval`` loads it (``sftkit.runs.load_for_inference``: the base
model, its embeddings grown for added tokens, the adapter merged) and saved with
``save_pretrained`` (safetensors); a full fine-tuning run is copied (or converted, for another
``--dtype``). Either way the folder gets the run's tokenizer (its chat template is the training
template), a ``generation_config.json`` that stops where sftkit stops (EOS and the template's
end-of-turn token) and decodes greedily with eval's default budget, and a model card. It
loads with ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` without sftkit installed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click

from sftkit.errors import UsageError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# the files of a full run that make up the model (everything else in a run folder is sftkit's)
MODEL_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "special_tokens_map.json",
               "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "*.model")


@click.command("export")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.argument("out_dir", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="fp32", show_default=True,
              help="Weight precision of the exported model (fp32 generates exactly what the run generates on CPU).")
def command(run_dir, out_dir, dtype):
    """Write a run as a plain transformers folder (LoRA adapters merged into the base weights).

    \b
      sftkit export runs/demo exported/demo
      python -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('exported/demo')"
    """
    from sftkit.console import err_console, plain

    out = export_run(run_dir, out_dir, dtype=dtype, say=lambda msg: err_console.print(plain(msg, "dim")))
    size = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 2**20
    err_console.print(plain(f"exported {run_dir} to {out} ({dtype}, {size:,.1f} MiB of weights); load it with "
                            f"AutoModelForCausalLM.from_pretrained({str(out)!r})", "green"))


def export_run(run_dir: str | Path, out_dir: str | Path, *, dtype: str = "fp32", say=print) -> Path:
    """Export the run folder ``run_dir`` into the new folder ``out_dir``; returns ``out_dir``.

    The folder is written beside ``out_dir`` under a temporary name and renamed at the end, so
    ``out_dir`` is either absent or complete. An existing non-empty ``out_dir`` is refused.
    """
    from sftkit.card import export_card
    from sftkit.io import writing
    from sftkit.runs import open_run

    run_dir, out = Path(run_dir), Path(out_dir)
    info = open_run(run_dir)  # a damaged run folder is one message before anything is written
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not an empty folder; export writes a new folder",
                         hint="choose a new OUT_DIR, or remove the old export first")
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise UsageError(f"OUT_DIR {out} is inside the run folder {run_dir}", hint="export to a folder outside it")
    with writing(out, "export"):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-export-{out.name}-", dir=out.parent))
    try:
        # A full disk (torch, safetensors or tokenizers failing to write) is one WriteError
        # naming OUT_DIR; the temporary folder goes, so OUT_DIR is either absent or complete.
        with writing(out, "export", partial=tmp):
            if info["method"] == "full" and _saved_dtype(run_dir) == DTYPES[dtype]:
                say(f"copying the fully fine-tuned model in {run_dir}")
                tokenizer, model_config = _copy_full(run_dir, tmp)
            else:
                say(f"loading {run_dir}" + (" and merging its adapter into the base weights"
                                            if info["method"] == "lora" else ""))
                tokenizer, model_config = _save_loaded(run_dir, tmp, DTYPES[dtype])
            generation = generation_config(info, tokenizer, model_config, say)
            generation.save_pretrained(str(tmp))
            export_card(run_dir, tmp, dtype, out=out)
            _plain_modes(tmp)
            if out.exists():
                out.rmdir()  # empty, checked above
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _plain_modes(folder: Path) -> None:
    """The modes a plainly created folder and its files get (not mkdtemp's private 0o700)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for child in folder.iterdir():
        child.chmod(0o666 & ~umask)


def _saved_dtype(run_dir: Path) -> str | None:
    import json

    try:
        config = json.loads((run_dir / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("dtype") or config.get("torch_dtype")


def _copy_full(run_dir: Path, target: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    for pattern in MODEL_FILES:
        for path in sorted(run_dir.glob(pattern)):
            if path.is_file():
                shutil.copy2(path, target / path.name)
    return AutoTokenizer.from_pretrained(str(target)), AutoConfig.from_pretrained(str(target))


def _save_loaded(run_dir: Path, target: Path, torch_dtype: str) -> tuple[Any, Any]:
    import torch

    from sftkit.runs import load_for_inference

    model, tokenizer, _info = load_for_inference(run_dir)  # fp32, adapter merged
    model = model.to(getattr(torch, torch_dtype))
    model.config.use_cache = True
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    return tokenizer, model.config


def generation_config(info: dict, tokenizer: Any, model_config: Any, say=print) -> Any:
    """Greedy decoding that stops where ``sftkit eval`` stops: EOS and the template's end of turn
    (when it is one token), with eval's default budget for the run's task."""
    from transformers import GenerationConfig

    from sftkit.eval.engine import DEFAULT_MAX_NEW_TOKENS, FALLBACK_MAX_NEW_TOKENS
    from sftkit.generate import stops_for

    end = _end_of_turn(info, tokenizer)
    stops = stops_for(tokenizer, [end] if end else [])
    if stops.strings:
        say(f"note: the template's end of turn {stops.strings[0]!r} is several tokens, so the generation config "
            f"stops at EOS only; pass stop_strings={list(stops.strings)!r} and tokenizer= to generate() to stop there")
    task = (info.get("spec") or {}).get("task") or "generation"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops.eos_ids or (None,))[0]
    return GenerationConfig(
        bos_token_id=getattr(model_config, "bos_token_id", None) or tokenizer.bos_token_id,
        eos_token_id=(list(stops.token_ids) if len(stops.token_ids) > 1 else
                      stops.token_ids[0] if stops.token_ids else None),
        pad_token_id=pad, do_sample=False, num_beams=1,
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS.get(task, FALLBACK_MAX_NEW_TOKENS))


def _end_of_turn(info: dict, tokenizer: Any) -> str:
    """The text that closes an assistant turn in the run's template."""
    from sftkit import Example
    from sftkit.pipeline import Encoder, end_of_turn

    encoder = Encoder.build(template=info.get("template") or "chat_template",
                            template_options=info.get("template_options") or {}, tokenizer=tokenizer)
    return end_of_turn(encoder.segments(Example(instruction="x", output="y")))
