"""``sftkit eval``: the command line of the evaluation (options into an ``EvalSettings``).

    sftkit eval --model runs/demo --data test.jsonl            # compares with the run's base model
    sftkit eval --model smollm2-135m --data test.jsonl --spec financial_phrasebank
    sftkit eval --model runs/a --model runs/b --compare smollm2-135m --data test.jsonl   # N-way
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
from pydantic import Field

from sftkit.cli import checked_value, data_options, parse_component_options, parse_key_values, parse_names, reporter_flags
from sftkit.eval.engine import FALLBACK_MAX_NEW_TOKENS
from sftkit.generate import DEFAULT_BATCH_TOKENS


@click.command("eval")
@click.option("--model", "models", multiple=True, metavar="RUN_DIR|MODEL",
              help="A run folder of `sftkit train`, or a model: smollm2-135m, tiny-random, a folder, a hub id. "
                   "Repeat it to compare several models on the same prompts (keyed model_1, model_2, ... in the "
                   "reports), each against the reference: --compare, else the first --model.")
@click.option("--data", metavar="PATH", type=click.Path(dir_okay=True),
              help="The evaluation data (held-out rows).")
@click.option("--diff", nargs=2, metavar="A.json B.json", type=click.Path(dir_okay=False), default=None,
              help="Instead of evaluating: two eval.json files side by side, and B - A with a paired bootstrap "
                   "interval and p-value where both hold the same prompts (their prompt-set hashes match).")
@data_options
@click.option("--template", metavar="NAME", help="Prompt template (default: the run's, else the spec's).")
@click.option("--template-option", "template_options", multiple=True, metavar="KEY=VALUE", help="Template option.")
@click.option("--metrics", metavar="A,B", help="Comma-separated metrics (default: those the metric plugins declare "
                                             "for the spec's task: classification accuracy,f1,exact_match; "
                                             "summarization rouge,bleu; qa exact_match,rouge; otherwise "
                                             "rouge,bleu,exact_match).")
@click.option("--metric-option", "metric_options", multiple=True, metavar="METRIC.KEY=VALUE",
              help="A metric option, e.g. rouge.tokenizer=whitespace, bleu.tokenize=zh, exact_match.mode=strict, "
                   "f1.average=macro (repeatable; unknown options exit 2 before any model loads).")
@click.option("--compare", metavar="BASE|RUN_DIR", help="A second model scored on the same prompts "
                                                         "(default for one run folder: its base model); with "
                                                         "several --model, the reference (key base).")
@click.option("--no-compare", is_flag=True, help="Evaluate only --model, even for a run folder.")
@click.option("--max-new-tokens", metavar="N", type=click.IntRange(min=1, max=2**17), default=None,
              help=f"Generation budget (default: 16 for classification, {FALLBACK_MAX_NEW_TOKENS} otherwise; at most "
                   f"131,072).")
@click.option("--batch-size", metavar="N", type=click.IntRange(min=1, max=4096), default=32, show_default=True,
              help="Prompts decoding at once (fewer where the batch would exceed --max-batch-tokens of KV cache).")
@click.option("--max-batch-tokens", metavar="N", default=str(DEFAULT_BATCH_TOKENS), show_default=True,
              callback=checked_value(Annotated[int, Field(ge=1, le=2**24)]),
              help="Tokens of KV cache a generation batch may hold: rows x (padded prompt + max new tokens), 1 to "
                   "16,777,216; for generators that batch.")
@click.option("--generator", metavar="NAME", default=None,
              help="How outputs are generated: hf (batched greedy decoding, the default), continuous (transformers' "
                   "continuous batching), vllm (needs vLLM and a CUDA GPU), or a plugin's; `sftkit plugins` lists them.")
@click.option("--generator-option", "generator_options", multiple=True, metavar="KEY=VALUE",
              help="A generator option, e.g. share_prefix=false for hf, page_size=128 for continuous (repeatable; "
                   "unknown options exit 2 before any model loads).")
@click.option("--share-base/--no-share-base", default=True, show_default=True,
              help="With several --model: LoRA runs on the same base attach their adapters to one loaded base "
                   "(unmerged: less loading and memory, slower generation on CPU); --no-share-base loads each run "
                   "afresh with its adapter merged.")
@click.option("--by", metavar="COLUMN", default=None,
              help="Break every metric down by group, with intervals: task (the spec's task field), label, or any "
                   "column of the data; none to switch it off. Default: task when it holds more than one value, "
                   "else the label for classification.")
@click.option("--limit", metavar="N", type=click.IntRange(min=1), default=None, help="Evaluate only the first N rows.")
@click.option("--resamples", metavar="N", type=click.IntRange(min=100, max=100_000), default=1000, show_default=True,
              help="Bootstrap resamples (100 to 100,000).")
@click.option("--seed", metavar="N", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True,
              help="Bootstrap seed (0 to 4294967295).")
@click.option("--max-invalid-share", metavar="SHARE", default="0.1", show_default=True,
              callback=checked_value(Annotated[float, Field(ge=0, le=1)]), help="Classification: warn (terminal, reports) when more than this share of a "
                                      "model's outputs map to no label (0 to 1).")
@click.option("--report-dir", metavar="DIR", type=click.Path(file_okay=False), default="reports/eval",
              show_default=True, help="Where the reports go (eval.html and eval.json from the built-in reporters).")
@reporter_flags
@click.option("--json", "json_path", metavar="PATH", type=click.Path(dir_okay=False), default=None,
              help="Also write the JSON result to PATH (with --diff: the diff).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the models run: auto = the GPU when there is one (weights in bf16, or fp16 where bf16 "
                   "is not native), else the CPU (fp32).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model folder (off by default).")
def command(models, data, diff, request, template, template_options, metrics, metric_options, compare, no_compare,
            max_new_tokens, batch_size, max_batch_tokens, generator, generator_options, share_base, by, limit,
            resamples, seed, max_invalid_share, report_dir, reporters, no_reporters, json_path, device, trust_remote_code):
    """Generate with a model (and a base model), score, and compare with confidence intervals.

    Prompts are rendered exactly as in training minus the response; generation is greedy,
    batched with left padding, and stops at EOS or the template's end of turn. Classification
    outputs are mapped to the spec's labels (unmappable ones count as wrong and are listed).
    Every aggregate gets a 95% bootstrap interval; with a base model, a paired bootstrap gives
    the interval of the difference and its p-value. Repeat --model to compare several models
    with one reference (Holm-corrected); --by breaks every metric down by group; --diff A B
    compares two eval.json files.
    """
    from sftkit.card import record_evaluation
    from sftkit.console import err_console, plain, print_skipped
    from sftkit.eval.engine import EvalSettings, run_eval
    from sftkit.eval.printing import print_summary
    from sftkit.io import check_writable_dir, check_writable_file, protect_inputs
    from sftkit.pipeline import RenderSettings
    from sftkit.registry import get_registry
    from sftkit.reporting import choose_reporters, write_reports
    from sftkit.types import Result

    if diff:
        from sftkit.eval.diff import print_diff

        compared = print_diff(*diff)
        if json_path:
            from sftkit.io import atomic_write_json, check_writable_file

            check_writable_file(json_path, "--json")
            atomic_write_json(json_path, compared)
        return
    if not models or not data:
        raise click.UsageError(f"Missing option '{'--model' if not models else '--data'}' (or --diff A.json B.json).")
    protect_inputs([data, request.spec])
    check_writable_dir(report_dir, "--report-dir")
    if json_path:
        check_writable_file(json_path, "--json")
    chosen = choose_reporters(get_registry(), parse_names(reporters), parse_names(no_reporters))
    settings = EvalSettings(
        model=models[0], models=tuple(models) if len(models) > 1 else (), compare=compare, no_compare=no_compare,
        metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None,
        metric_options=parse_component_options(metric_options, "--metric-option", "rouge"),
        max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit, resamples=resamples, seed=seed,
        max_invalid_share=max_invalid_share, device=device, generator=generator,
        generator_options=parse_key_values(generator_options, "--generator-option"), max_batch_tokens=max_batch_tokens,
        by=by, share_base=share_base)
    render = RenderSettings(template=template, template_options=parse_key_values(template_options, "--template-option"),
                            trust_remote_code=trust_remote_code)
    result = run_eval(request.for_path(data), render, settings)
    print_summary(result)
    print_skipped([error["message"] for error in result.get("skipped_lines", [])])
    shown = ", ".join(models) if len(models) > 1 else result["models"]["tuned"]["name"]
    report = Result("eval", f"sftkit eval: {shown} on {Path(data).name}", result)
    written = write_reports(report, report_dir, get_registry(), json_copy=json_path, reporters=chosen)
    if len(models) == 1:
        written.append(record_evaluation(models[0], result))  # a run folder's model card gets the headline
    err_console.print(plain("reports: " + ", ".join(str(p) for p in written if p), "dim"))
