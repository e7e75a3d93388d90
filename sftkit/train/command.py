"""``sftkit train``: LoRA or full fine-tuning with sftkit's templates and masking, from a recipe and/or flags."""
from __future__ import annotations

from pathlib import Path

import click

from sftkit.cli import data_flags, parse_key_values, parse_names, render_flags
from sftkit.recipe import ATTENTION, recipe_doc


@click.command("train")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--data", "data", multiple=True, metavar="PATH[:WEIGHT]", help=recipe_doc("data"))
@click.option("--eval-data", metavar="PATH", help=recipe_doc("eval_data"))
@data_flags
@render_flags
@click.option("--lora", "method", flag_value="lora", default=None, help="Train a LoRA adapter (the default method).")
@click.option("--full", "method", flag_value="full", help="Full fine-tuning (every weight; method: full).")
@click.option("--lora-r", metavar="N", type=int, help=recipe_doc("lora_r"))
@click.option("--lora-alpha", metavar="N", type=int, help=recipe_doc("lora_alpha"))
@click.option("--lora-dropout", metavar="X", type=float, help=recipe_doc("lora_dropout"))
@click.option("--target-modules", metavar="A,B", help=recipe_doc("target_modules"))
@click.option("--epochs", metavar="X", type=float, help=recipe_doc("epochs"))
@click.option("--max-steps", metavar="N", type=int, help=recipe_doc("max_steps"))
@click.option("--lr", metavar="X", type=float, help=recipe_doc("lr"))
@click.option("--batch-size", metavar="N", type=int, help=recipe_doc("batch_size"))
@click.option("--grad-accum", metavar="N", type=int, help=recipe_doc("grad_accum"))
@click.option("--warmup-ratio", metavar="X", type=float, help=recipe_doc("warmup_ratio"))
@click.option("--scheduler", type=click.Choice(["cosine", "linear", "constant"]), help=recipe_doc("scheduler"))
@click.option("--weight-decay", metavar="X", type=float, help=recipe_doc("weight_decay"))
@click.option("--max-grad-norm", metavar="X", type=float, help=recipe_doc("max_grad_norm"))
@click.option("--seed", metavar="N", type=int, help=recipe_doc("seed"))
@click.option("--packing/--no-packing", default=None, help=recipe_doc("packing"))
@click.option("--max-tokens-per-forward", metavar="N", type=int, help=recipe_doc("max_tokens_per_forward"))
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help=recipe_doc("precision"))
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help=recipe_doc("gradient_checkpointing"))
@click.option("--quantize", type=click.Choice(["4bit", "8bit"]), help=recipe_doc("quantize"))
@click.option("--attention", type=click.Choice(list(ATTENTION)), help=recipe_doc("attention"))
@click.option("--num-proc", metavar="N", type=int, help=recipe_doc("num_proc"))
@click.option("--data-cache/--no-data-cache", default=None, help=recipe_doc("data_cache"))
@click.option("--eval-steps", metavar="N", type=int, help=recipe_doc("eval_steps"))
@click.option("--early-stopping-patience", metavar="N", type=int, help=recipe_doc("early_stopping_patience"))
@click.option("--save-steps", metavar="N", type=int, help=recipe_doc("save_steps"))
@click.option("--save-total-limit", metavar="N", type=int, help=recipe_doc("save_total_limit"))
@click.option("--logging-steps", metavar="N", type=int, help=recipe_doc("logging_steps"))
@click.option("--report-to", metavar="A,B", help=recipe_doc("report_to"))
@click.option("--output-dir", metavar="DIR", help=recipe_doc("output_dir"))
@click.option("--overwrite", is_flag=True, default=None, help=recipe_doc("overwrite"))
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[CHECKPOINT]",
              help="Continue the run in --output-dir from its latest complete checkpoint, the one given, or 'latest-valid' (the newest undamaged one).")
@click.option("--no-validate", "no_validate", is_flag=True, help=recipe_doc("validate"))
@click.option("--reporter", "reporters", multiple=True, metavar="NAMES", help=recipe_doc("reporters"))
@click.option("--no-reporter", "no_reporters", multiple=True, metavar="NAMES", help=recipe_doc("no_reporters"))
@click.pass_context
def command(ctx, recipe, resume, no_validate, **flags):
    """Fine-tune a model (LoRA or full) on sftkit's own tokens and labels.

    RECIPE is an optional YAML file of the same settings; flags override it. Example:

    \b
      sftkit train --data train.jsonl --spec alpaca --model smollm2-135m --max-steps 30
      sftkit train recipe.yaml --lr 1e-4
      sftkit train --output-dir runs/x --resume          # continue after a crash
      accelerate launch -m sftkit train recipe.yaml      # data-parallel
      accelerate launch --config_file configs/accelerate/fsdp.yaml -m sftkit train recipe.yaml
    """
    from sftkit.console import err_console, plain, progress_disabled
    from sftkit.recipe import build_recipe
    from sftkit.reporting import choose_reporters
    from sftkit.train.checkpoints import LATEST, LATEST_VALID, missing_checkpoint
    from sftkit.train.loop import train

    given = {name: value for name, value in flags.items()
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    settings = {}
    for name, value in given.items():
        if name in ("data",):
            settings["data"] = list(value)
        elif name == "columns":
            settings["columns"] = parse_key_values(value, "--column")
        elif name in ("reporters", "no_reporters"):
            settings[name] = parse_names(value)
        elif name in ("loader_options", "template_options", "masking_options"):
            settings[name] = parse_key_values(value, "--" + name.replace("_options", "-option").replace("_", "-"))
        else:
            settings[name] = value
    if no_validate:
        settings["validate"] = False
    if resume and resume not in (LATEST, LATEST_VALID) and not Path(resume).is_dir():
        raise missing_checkpoint(resume)  # before the recipe: without one, "no training data" misleads
    if resume and resume not in (LATEST, LATEST_VALID) and "output_dir" not in settings:
        settings["output_dir"] = str(Path(resume).resolve().parent.parent)
    if resume and recipe is None and "data" not in settings and settings.get("output_dir"):
        saved = Path(settings["output_dir"]) / "recipe.yaml"
        if saved.is_file():
            recipe = str(saved)
    resolved = build_recipe(recipe, settings)
    choose_reporters(None, resolved.reporters or (), resolved.no_reporters)  # an unknown name exits 2 now
    result = train(resolved, resume=resume, progress=not progress_disabled(),
                   log=lambda msg: err_console.print(plain(msg, "dim")))
    if result:
        s = result["summary"]
        err_console.print(plain(
            f"done: {s['steps']} steps, loss {s['first_loss']:.4f} -> {s['final_loss']:.4f}"
            + (f", best eval loss {s['best_eval_loss']:.4f}" if s["best_eval_loss"] is not None else "")
            + f", {s['trained_tokens_per_s']:,.1f} trained tokens/s ({s['tokens_per_s']:,.1f} tokens/s); "
              f"run folder {result['run_dir']} (train.html)", "green"))
