"""``sftkit train``: LoRA or full fine-tuning with sftkit's templates and masking, from a recipe and/or flags."""
from __future__ import annotations

from pathlib import Path

import click

from sftkit.cli import data_flags, parse_key_values, render_flags


@click.command("train")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--data", "data", multiple=True, metavar="PATH[:WEIGHT]",
              help="Training data (repeatable; PATH:WEIGHT mixes tasks, weight 2 = each example twice per epoch).")
@click.option("--eval-data", help="Held-out data for the eval loss.")
@data_flags
@render_flags
@click.option("--lora", "method", flag_value="lora", default=None, help="Train a LoRA adapter (default).")
@click.option("--full", "method", flag_value="full", help="Full fine-tuning (every weight).")
@click.option("--lora-r", type=int, help="LoRA rank [16].")
@click.option("--lora-alpha", type=int, help="LoRA alpha [32].")
@click.option("--lora-dropout", type=float, help="LoRA dropout [0; it costs seconds per step on CPU].")
@click.option("--target-modules", help="LoRA target modules, comma-separated [attention and MLP projections].")
@click.option("--epochs", type=float, help="Epochs [1].")
@click.option("--max-steps", type=int, help="Optimizer steps (overrides --epochs).")
@click.option("--lr", type=float, help="Learning rate [2e-4 LoRA, 2e-5 full].")
@click.option("--batch-size", type=int, help="Examples per micro-batch and process [8].")
@click.option("--grad-accum", type=int, help="Micro-batches per optimizer step [1].")
@click.option("--warmup-ratio", type=float, help="Share of steps warming up [0.05].")
@click.option("--scheduler", type=click.Choice(["cosine", "linear", "constant"]), help="LR schedule [cosine].")
@click.option("--weight-decay", type=float, help="AdamW weight decay [0].")
@click.option("--seed", type=int, help="Seed for data order, mixing and LoRA init [42].")
@click.option("--packing/--no-packing", default=None,
              help="Padding-free packing with attention kept inside each example [on]; off: padded batches.")
@click.option("--max-tokens-per-forward", type=int,
              help="Split a micro-batch into forward passes of at most N tokens (same step, less memory) [1024].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              help="auto [default]: bf16/fp16 on GPUs that support it, fp32 on CPU.")
@click.option("--eval-steps", type=int, help="Eval loss every N steps (and at the end) when --eval-data is given.")
@click.option("--early-stopping-patience", type=int, help="Stop after N evaluations without a better eval loss.")
@click.option("--save-steps", type=int, help="Checkpoint every N steps [100].")
@click.option("--save-total-limit", type=int, help="Checkpoints kept [2].")
@click.option("--logging-steps", type=int, help="Write metrics every N steps [1].")
@click.option("--output-dir", help="Run folder [runs/<data>-<method>].")
@click.option("--overwrite", is_flag=True, default=None, help="Replace a finished or interrupted run in --output-dir.")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CHECKPOINT]",
              help="Continue the run in --output-dir from its latest complete checkpoint (or the one given).")
@click.option("--no-validate", "no_validate", is_flag=True, help="Skip the pre-flight `sftkit validate`.")
@click.pass_context
def command(ctx, recipe, resume, no_validate, **flags):
    """Fine-tune a model (LoRA or full) on sftkit's own tokens and labels.

    RECIPE is an optional YAML file of the same settings; flags override it. Example:

    \b
      sftkit train --data train.jsonl --spec alpaca --model smollm2-135m --max-steps 30
      sftkit train recipe.yaml --lr 1e-4
      sftkit train --output-dir runs/x --resume          # continue after a crash
      accelerate launch -m sftkit train recipe.yaml      # data-parallel
    """
    from sftkit.console import err_console, plain, progress_disabled
    from sftkit.recipe import build_recipe
    from sftkit.train.loop import train

    given = {name: value for name, value in flags.items()
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    settings = {}
    for name, value in given.items():
        if name in ("data",):
            settings["data"] = list(value)
        elif name == "columns":
            settings["columns"] = parse_key_values(value, "--column")
        elif name in ("loader_options", "template_options", "masking_options"):
            settings[name] = parse_key_values(value, "--" + name.replace("_options", "-option").replace("_", "-"))
        else:
            settings[name] = value
    if no_validate:
        settings["validate"] = False
    if resume and resume != "latest" and "output_dir" not in settings:
        settings["output_dir"] = str(Path(resume).resolve().parent.parent)
    if resume and recipe is None and "data" not in settings and settings.get("output_dir"):
        saved = Path(settings["output_dir"]) / "recipe.yaml"
        if saved.is_file():
            recipe = str(saved)
    resolved = build_recipe(recipe, settings)
    result = train(resolved, resume=resume, progress=not progress_disabled(),
                   log=lambda msg: err_console.print(plain(msg, "dim")))
    if result:
        s = result["summary"]
        err_console.print(plain(
            f"done: {s['steps']} steps, loss {s['first_loss']:.4f} -> {s['final_loss']:.4f}"
            + (f", best eval loss {s['best_eval_loss']:.4f}" if s["best_eval_loss"] is not None else "")
            + f", {s['trained_tokens_per_s']:,.1f} trained tokens/s ({s['tokens_per_s']:,.1f} tokens/s); "
              f"run folder {result['run_dir']} (train.html)", "green"))
