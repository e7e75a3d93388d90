"""``sftkit eval``: generate with a model (and a base to compare), score, bootstrap, report.

    sftkit eval --model runs/demo --data test.jsonl            # compares with the run's base model
    sftkit eval --model smollm2-135m --data test.jsonl --spec financial_phrasebank

The engine (``run_eval``) renders every prompt exactly as in training minus the response,
generates greedily in left-padded batches (``sftkit.generate``), maps classification outputs
to labels (``sftkit.labels``), scores each example with the metric plugins, and puts a
percentile bootstrap interval on every aggregate and a paired bootstrap on the difference
(``sftkit.stats``). ``--model`` is called *tuned* and ``--compare`` *base* in the reports.
"""
from __future__ import annotations

import gc
import time
import warnings
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import click

from sftkit.cli import data_options, parse_key_values
from sftkit.errors import DataError, SftkitError, UsageError

DEFAULT_METRICS = {
    "classification": ("accuracy", "f1", "exact_match"),
    "summarization": ("rouge", "bleu"),
    "qa": ("exact_match", "rouge"),
    "generation": ("rouge", "bleu", "exact_match"),
}
DEFAULT_MAX_NEW_TOKENS = {"classification": 16}
FALLBACK_MAX_NEW_TOKENS = 128
ROLES = ("base", "tuned")


# -- the pieces of an evaluation -----------------------------------------------------------------

@dataclass
class MetricSpec:
    """A metric component with the user's options, checked before any model loads."""

    name: str
    component: Any
    options: dict

    @property
    def func(self) -> Callable:
        return self.component.func

    @property
    def wants_labels(self) -> bool:
        """Metrics scored on mapped labels for classification data (accuracy, f1)."""
        return getattr(self.func, "input", "text") == "label"

    def call(self, attr: str | None, *args: Any, **extra: Any) -> Any:
        """Call the metric (or one of its attributes), naming the plugin if it fails."""
        from sftkit.registry import debug_enabled

        target = self.func if attr is None else getattr(self.func, attr)
        try:
            return target(*args, **{**self.options, **extra})
        except SftkitError:
            raise
        except Exception as exc:
            if debug_enabled() or self.component.builtin:
                raise
            raise self.component.failure(exc) from exc


@dataclass
class ModelRun:
    """One model's outputs on the evaluation rows."""

    role: str
    name: str
    run_info: dict | None
    texts: list[str]
    generations: list[Any]
    seconds: float
    labels: list[Any] | None = None  # Mapped, for classification
    scores: dict[str, list[float]] = field(default_factory=dict)

    def predictions_for(self, metric: MetricSpec, classification: bool) -> list[str]:
        if classification and metric.wants_labels and self.labels is not None:
            return [m.label for m in self.labels]
        return self.texts


def resolve_metrics(names: list[str], options: dict[str, dict], registry: Any) -> list[MetricSpec]:
    """Look up each metric and check its options (unknown options are rejected here)."""
    unknown_targets = sorted(set(options) - set(names))
    if unknown_targets:
        raise UsageError(f"--metric-option names metric(s) not being computed: {', '.join(unknown_targets)}",
                         hint=f"metrics: {', '.join(names)}")
    out = []
    for name in names:
        component = registry.get("metrics", name)
        bound = component.bind(options.get(name, {}))
        out.append(MetricSpec(name, component, dict(bound.options)))
    return out


def parse_metric_options(items: tuple[str, ...]) -> dict[str, dict]:
    """``("rouge.tokenizer=whitespace",)`` -> ``{"rouge": {"tokenizer": "whitespace"}}``."""
    out: dict[str, dict] = {}
    for key, value in parse_key_values(items, "--metric-option").items():
        if "." not in key:
            raise UsageError(f"--metric-option {key}={value}: name the metric, e.g. rouge.tokenizer=whitespace")
        metric, option = key.split(".", 1)
        out.setdefault(metric.strip(), {})[option.strip()] = value
    return out


def sanity_warnings(run: ModelRun, max_new_tokens: int) -> list[dict]:
    """Empty generations, every prediction identical, generations that never stopped."""
    out = []
    rows = len(run.texts)
    empty = [i for i, t in enumerate(run.texts) if not t.strip()]
    if empty:
        out.append({"model": run.role, "code": "empty_generations", "rows": empty,
                    "message": f"{run.role}: {len(empty)} of {rows} generations are empty"})
    if rows > 1 and len(set(run.texts)) == 1:
        out.append({"model": run.role, "code": "identical_predictions", "rows": [],
                    "message": f"{run.role}: all {rows} predictions are identical ({run.texts[0][:60]!r})"})
    limit = [i for i, g in enumerate(run.generations) if g.hit_limit]
    if limit:
        out.append({"model": run.role, "code": "hit_max_new_tokens", "rows": limit,
                    "message": f"{run.role}: {len(limit)} of {rows} generations hit --max-new-tokens {max_new_tokens} "
                               f"without stopping (raise it, or the model does not stop at the end of turn)"})
    return out


# -- loading ---------------------------------------------------------------------------------------

def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - cosmetic only
        pass


def load_examples(data: str, *, spec: str | None, columns: tuple[str, ...], instruction: str | None,
                  loader: str | None, loader_options: dict, run_info: dict | None, limit: int | None,
                  registry: Any, skip_invalid: bool = False,
                  skipped: list | None = None) -> tuple[Any, str, list]:
    """The spec, a note on how it was chosen, and the (limited) examples; bad rows are errors
    (broken lines are left out and appended to ``skipped`` with ``skip_invalid``)."""
    from sftkit.pipeline import load_records, open_dataset
    from sftkit.spec import DEFAULT_COLUMNS, examples_from_records, spec_from_dict

    run_spec = (run_info or {}).get("spec")
    if not spec and not columns and instruction is None and isinstance(run_spec, dict) and run_spec.get("format"):
        # DatasetSpec.to_dict lists the resolved columns only: a default column the spec removed
        # (``instruction: null`` with a constant instruction) must stay removed when read back.
        saved = dict(run_spec)
        saved["columns"] = {**{name: None for name in DEFAULT_COLUMNS.get(saved["format"], {})},
                            **(saved.get("columns") or {})}
        chosen = spec_from_dict(saved, "the run's sftkit_run.json")
        opts = {**chosen.loader_options, **loader_options}
        records = load_records(data, loader or chosen.loader, opts, registry, skip_invalid=skip_invalid,
                               skipped=skipped)
        examples = examples_from_records(records, chosen)
        note = f"spec {chosen.name} (from the run folder)"
    else:
        chosen, note, examples = open_dataset(data, spec=spec, columns=columns, instruction=instruction,
                                              loader=loader, loader_options=loader_options, registry=registry,
                                              skip_invalid=skip_invalid, skipped=skipped)
    rows = list(islice(examples, limit) if limit else examples)
    if not rows:
        raise DataError("no examples to evaluate", path=data)
    for example in rows:
        problems = example.meta.get("problems")
        if problems:
            code, name, message = problems[0]
            raise DataError(message, path=data, row=example.row, field=name,
                            hint="fix the row, or run `sftkit validate` to list every problem")
    return chosen, note, rows


def references_for(examples: list, classification: bool) -> list[str]:
    """The reference answer of each example (the label for classification)."""
    if classification:
        return [(e.label if e.label is not None else e.response_text()).strip() for e in examples]
    return [e.response_text() for e in examples]


def generate_with(role: str, name: str, examples: list, template: str, template_options: dict,
                  prompts: list[str] | None = None, *, max_new_tokens: int, batch_size: int, trust_remote_code: bool,
                  registry: Any) -> tuple[ModelRun, list[str]]:
    """Load one model, generate for every prompt, and free the model.

    Without ``prompts`` they are rendered with this model's tokenizer and template; the
    prompts used are returned so a second model answers exactly the same ones.
    """
    from sftkit.console import err_console, plain
    from sftkit.generate import generate
    from sftkit.pipeline import Encoder, end_of_turn
    from sftkit.runs import load_for_inference

    err_console.print(plain(f"{role}: loading {name}", "dim"))
    with warnings.catch_warnings():  # library deprecation notes are not the user's concern here
        warnings.simplefilter("ignore", FutureWarning)
        model, tokenizer, info = load_for_inference(name, trust_remote_code=trust_remote_code)
    encoder = Encoder.build(template=template, tokenizer=tokenizer, template_options=template_options,
                            registry=registry)
    if prompts is None:
        prompts = [encoder.prompt(example) for example in examples]
    ends = sorted({end_of_turn(encoder.segments(example)) for example in examples})
    start = time.perf_counter()
    generations = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           end_texts=ends, description=f"{role}: generating")
    seconds = time.perf_counter() - start
    del model
    gc.collect()
    tokens = sum(g.tokens for g in generations)
    err_console.print(plain(f"{role}: {len(prompts)} outputs, {tokens} tokens in {seconds:.1f} s", "dim"))
    return ModelRun(role, str(name), info, [g.text.strip() for g in generations], generations, seconds), prompts


# -- scoring ---------------------------------------------------------------------------------------

def score(metrics: list[MetricSpec], runs: dict[str, ModelRun], references: list[str], classification: bool,
          *, resamples: int, seed: int, confidence: float) -> tuple[dict, list[dict]]:
    """Per-example scores, aggregates, intervals and paired differences; and metric warnings."""
    import numpy as np

    from sftkit import stats

    indices = stats.resample_indices(len(references), resamples, seed)
    table: dict[str, dict] = {}
    notes: list[dict] = []
    for metric in metrics:
        replicates: dict[str, dict[str, Any]] = {}
        values: dict[str, dict[str, float]] = {}
        for role, run in runs.items():
            predictions = run.predictions_for(metric, classification)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                per_example = metric.call(None, predictions, references)
                aggregate = (metric.call("aggregate", predictions, references)
                             if hasattr(metric.func, "aggregate") else {})
            for warning in caught:
                if issubclass(warning.category, UserWarning):
                    notes.append({"model": role, "code": f"metric_{metric.name}", "rows": [],
                                  "message": f"{role}: {warning.message}"})
            if hasattr(metric.func, "resampled"):
                fast = metric.call("resampled", predictions, references, indices)
            else:
                fast = {}
            for sub, scores in per_example.items():
                scores = [float(s) for s in scores]
                run.scores[sub] = scores
                if sub in aggregate:
                    value = float(aggregate[sub])
                    reps = fast.get(sub)
                    if reps is None:
                        def stat(rows, sub=sub, predictions=predictions):
                            return metric.call("aggregate", [predictions[i] for i in rows],
                                               [references[i] for i in rows])[sub]
                        reps = stats.statistic_replicates(stat, indices)
                else:
                    value = float(np.mean(scores))
                    reps = stats.mean_replicates(scores, indices)
                values.setdefault(sub, {})[role] = value
                replicates.setdefault(sub, {})[role] = np.asarray(reps, dtype=float)
        for sub in values:
            entry: dict[str, Any] = {"metric": metric.name,
                                     "aggregate": "corpus" if hasattr(metric.func, "aggregate") else "mean"}
            for role in runs:
                entry[role] = stats.interval(values[sub][role], replicates[sub][role], confidence).to_dict()
            if "base" in runs and "tuned" in runs:
                entry["difference"] = stats.paired_difference(
                    values[sub]["base"], values[sub]["tuned"], replicates[sub]["base"], replicates[sub]["tuned"],
                    confidence).to_dict()
            table[sub] = entry
    return table, notes


def describe_metrics(metrics: list[MetricSpec]) -> dict[str, dict]:
    """Each metric's options and settings (BLEU signature, exact-match mode, ...)."""
    out = {}
    for metric in metrics:
        info = {"options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in metric.options.items()}}
        if hasattr(metric.func, "describe"):
            info.update(metric.call("describe"))
        out[metric.name] = info
    return out


# -- the engine ------------------------------------------------------------------------------------

def run_eval(model: str, data: str, *, spec: str | None = None, columns: tuple[str, ...] = (),
             instruction: str | None = None, loader: str | None = None, loader_options: dict | None = None,
             template: str | None = None, template_options: dict | None = None, metrics: list[str] | None = None,
             metric_options: dict[str, dict] | None = None, compare: str | None = None, no_compare: bool = False,
             max_new_tokens: int | None = None, batch_size: int = 16, limit: int | None = None,
             resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
             trust_remote_code: bool = False, skip_invalid: bool = False) -> dict:
    """Evaluate ``model`` (and ``compare``) on ``data``; returns the report data (JSON-ready)."""
    from sftkit.labels import LabelMapper, classification_summary
    from sftkit.registry import get_registry
    from sftkit.runs import is_run_dir, read_run

    registry = get_registry()
    run_info = read_run(model) if is_run_dir(model) else None
    if Path(model).is_dir() and run_info is None and (Path(model) / "adapter_config.json").exists():
        raise UsageError(f"{model} holds an adapter but no sftkit_run.json",
                         hint="pass the --output-dir of a finished `sftkit train`")
    if compare and no_compare:
        raise UsageError("--compare and --no-compare exclude each other")
    if compare is None and run_info is not None and not no_compare:
        compare = str(run_info["base_model"])
    if compare is not None and is_run_dir(compare):
        read_run(compare)  # a broken run folder is reported before any model loads

    skipped: list = []
    chosen, note, examples = load_examples(data, spec=spec, columns=columns, instruction=instruction, loader=loader,
                                           loader_options=loader_options or {}, run_info=run_info, limit=limit,
                                           registry=registry, skip_invalid=skip_invalid, skipped=skipped)
    task = chosen.task or "generation"
    classification = task == "classification"
    names = metrics or list(DEFAULT_METRICS.get(task, DEFAULT_METRICS["generation"]))
    metric_specs = resolve_metrics(names, metric_options or {}, registry)
    references = references_for(examples, classification)
    mapper = None
    if classification:
        labels = list(chosen.labels) or sorted(set(references))
        mapper = LabelMapper(labels)
        for example, reference in zip(examples, references):
            if reference not in mapper.labels:
                raise DataError(f"reference label {reference!r} is not one of the spec's labels {mapper.labels}",
                                path=data, row=example.row, field="label",
                                hint="add it to labels: in the spec, or fix the row")
        for metric in metric_specs:
            if "labels" in metric.component.options() and "labels" not in (metric_options or {}).get(metric.name, {}):
                metric.options["labels"] = list(mapper.labels)

    notes: list[dict] = []
    trained_with = (run_info or {}).get("template")
    if run_info is not None and template is None:
        template = trained_with or None
        template_options = template_options or dict(run_info.get("template_options") or {})
    elif trained_with and template != trained_with:
        notes.append({"model": "tuned", "code": "template_differs", "rows": [],
                      "message": f"tuned: trained with template {trained_with!r}, evaluated with {template!r} "
                                 f"(prompts differ from training)"})
    template = template or chosen.default_template
    template_options = template_options or {}
    max_new = max_new_tokens or DEFAULT_MAX_NEW_TOKENS.get(task, FALLBACK_MAX_NEW_TOKENS)

    _quiet_transformers()
    runs: dict[str, ModelRun] = {}
    prompts = None
    for role, name in [("tuned", model)] + ([("base", compare)] if compare is not None else []):
        runs[role], prompts = generate_with(role, name, examples, template, template_options, prompts,
                                            max_new_tokens=max_new, batch_size=batch_size,
                                            trust_remote_code=trust_remote_code, registry=registry)
        if mapper is not None:
            runs[role].labels = mapper.map_many(runs[role].texts)
    runs = {role: runs[role] for role in ROLES if role in runs}

    table, metric_notes = score(metric_specs, runs, references, classification, resamples=resamples, seed=seed,
                                confidence=confidence)
    warn = notes + [w for run in runs.values() for w in sanity_warnings(run, max_new)] + metric_notes

    result: dict[str, Any] = {
        "data": str(data), "rows": len(examples), "limit": limit, "spec": chosen.name, "spec_note": note,
        "task": task, "template": template, "template_options": template_options,
        "models": {role: {"name": run.name, "run": _run_summary(run.run_info), "seconds": round(run.seconds, 3),
                          "tokens": sum(g.tokens for g in run.generations)} for role, run in runs.items()},
        "generation": {"max_new_tokens": max_new, "batch_size": batch_size, "decoding": "greedy",
                       "padding": "left"},
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": confidence, "interval": "percentile",
                      "p_value": "paired, shifted to the null (Berg-Kirkpatrick et al. 2012), two-sided"},
        "metric_info": describe_metrics(metric_specs),
        "metrics": table,
        "primary": next(iter(table), None),
        "warnings": warn,
        "skipped_lines": [{"line": e.line, "row": e.row, "message": e.message} for e in skipped],
    }
    if classification and mapper is not None:
        result["classification"] = {
            "labels": mapper.labels,
            "models": {role: classification_summary([m.label for m in run.labels], references, mapper.labels,
                                                    run.labels) for role, run in runs.items()},
            "invalid": {role: [{"row": examples[i].row, "output": run.texts[i], "reason": m.reason}
                               for i, m in enumerate(run.labels) if m.rule == "invalid"]
                        for role, run in runs.items()},
        }
    result["examples"] = _examples(examples, prompts, references, runs, result["primary"])
    return result


def _run_summary(info: dict | None) -> dict | None:
    if not info:
        return None
    keys = ("base_model", "method", "template", "masking", "max_length", "added_tokens")
    return {k: info.get(k) for k in keys if k in info}


def _examples(examples: list, prompts: list[str], references: list[str], runs: dict[str, ModelRun],
              primary: str | None) -> list[dict]:
    out = []
    for i, example in enumerate(examples):
        item: dict[str, Any] = {"row": example.row, "prompt": prompts[i], "reference": references[i],
                                "outputs": {}, "scores": {}}
        for role, run in runs.items():
            output = {"text": run.texts[i], "stopped": run.generations[i].stopped, "tokens": run.generations[i].tokens}
            if run.labels is not None:
                output.update(label=run.labels[i].label, rule=run.labels[i].rule)
            item["outputs"][role] = output
            item["scores"][role] = {sub: scores[i] for sub, scores in run.scores.items()}
        if "base" in runs and "tuned" in runs:
            item["change"] = {sub: item["scores"]["tuned"][sub] - item["scores"]["base"][sub]
                              for sub in item["scores"]["tuned"] if sub in item["scores"]["base"]}
        out.append(item)
    return out


# -- terminal output -------------------------------------------------------------------------------

def _fmt(entry: dict | None) -> str:
    if not entry:
        return ""
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def print_summary(result: dict) -> None:
    """The Rich table of metrics with intervals (base, tuned, difference), warnings, the headline."""
    from rich.table import Table

    from sftkit.console import console, err_console, excerpt, plain

    roles = [role for role in ROLES if role in result["models"]]
    conf = int(round(result["bootstrap"]["confidence"] * 100))
    from rich import box

    names = ", ".join(f"{role} = {result['models'][role]['name']}" for role in roles)
    table = Table(title=plain(f"sftkit eval: {result['data']} ({result['rows']} rows, {result['task']})"),
                  caption=plain(f"{names}; value [{conf}% bootstrap CI]"), title_justify="left",
                  caption_justify="left", box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("metric")
    for role in roles:
        table.add_column(role if len(roles) > 1 else "value", justify="right")
    if len(roles) > 1:
        table.add_column("tuned - base", justify="right")
        table.add_column("p", justify="right")
    for sub, entry in result["metrics"].items():
        cells = [plain(sub)]
        for role in roles:  # the value, its interval on the line below
            e = entry.get(role)
            cells.append(plain(f"{e['value']:.3f}\n[{e['low']:.3f}, {e['high']:.3f}]" if e else ""))
        if "difference" in entry:
            diff = entry["difference"]
            style = ("green" if diff["low"] > 0 else "red") if diff["significant"] else ""
            cells += [plain(f"{diff['value']:+.3f}\n[{diff['low']:+.3f}, {diff['high']:+.3f}]", style),
                      plain(f"{diff['p_value']:.3f}")]
        table.add_row(*cells)
    console.print(table)
    for name, info in result["metric_info"].items():
        detail = "; ".join(f"{k}: {v}" for k, v in info.items() if k not in ("options", "definition"))
        if detail:
            console.print(plain(f"  {name}: {detail}", "dim"))
    for role, items in (result.get("classification") or {}).get("invalid", {}).items():
        if items:
            err_console.print(plain(f"{role}: {len(items)} output(s) map to no label (counted wrong):", "yellow"))
            for item in items[:5]:
                err_console.print(plain(f"  row {item['row']}: {excerpt(item['output'], 70)} ({item['reason']})", "dim"))
            if len(items) > 5:
                err_console.print(plain(f"  ... {len(items) - 5} more in the reports", "dim"))
    for warning in result["warnings"]:
        err_console.print(plain(f"warning: {warning['message']}", "yellow"))
    for line in headline(result):
        console.print(plain(line, "bold"))


def headline(result: dict) -> list[str]:
    """One line per headline metric: base -> tuned with intervals and the difference."""
    subs = ["accuracy", "f1_macro"] if result.get("task") == "classification" else [result.get("primary")]
    lines = []
    for sub in subs:
        entry = result["metrics"].get(sub or "")
        if not entry:
            continue
        if "base" in entry and "tuned" in entry:
            diff = entry["difference"]
            verdict = ("better, outside the CI" if diff["low"] > 0 else
                       "worse, outside the CI" if diff["high"] < 0 else "within the noise")
            lines.append(f"{sub}: base {_fmt(entry['base'])} -> tuned {_fmt(entry['tuned'])}; "
                         f"difference {diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}], "
                         f"p={diff['p_value']:.3f} ({verdict})")
        else:
            role = "tuned" if "tuned" in entry else "base"
            lines.append(f"{sub}: {_fmt(entry[role])}")
    return lines


# -- the command -----------------------------------------------------------------------------------

@click.command("eval")
@click.option("--model", required=True, metavar="RUN_DIR|MODEL",
              help="A run folder of `sftkit train`, or a model: smollm2-135m, tiny-random, a folder, a hub id.")
@click.option("--data", required=True, type=click.Path(dir_okay=True), help="The evaluation data (held-out rows).")
@data_options
@click.option("--template", help="Prompt template (default: the run's, else the spec's).")
@click.option("--template-option", "template_options", multiple=True, metavar="KEY=VALUE", help="Template option.")
@click.option("--metrics", help="Comma-separated metrics (default by task: classification accuracy,f1,exact_match; "
                                "summarization rouge,bleu; otherwise rouge,bleu,exact_match).")
@click.option("--metric-option", "metric_options", multiple=True, metavar="METRIC.KEY=VALUE",
              help="A metric option, e.g. rouge.tokenizer=whitespace, bleu.tokenize=zh, exact_match.mode=strict.")
@click.option("--compare", metavar="BASE|RUN_DIR", help="A second model scored on the same prompts "
                                                         "(default for a run folder: its base model).")
@click.option("--no-compare", is_flag=True, help="Evaluate only --model, even for a run folder.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
              help=f"Generation budget (default: 16 for classification, {FALLBACK_MAX_NEW_TOKENS} otherwise).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Prompts per batch.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the first N rows.")
@click.option("--resamples", type=click.IntRange(min=100), default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@click.option("--report-dir", type=click.Path(file_okay=False), default="reports/eval", show_default=True,
              help="Where eval.json and eval.html go.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the JSON result to this file.")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the model folder (off by default).")
def command(model, data, spec, columns, instruction, loader, loader_options, skip_invalid, template, template_options, metrics,
            metric_options, compare, no_compare, max_new_tokens, batch_size, limit, resamples, seed, report_dir,
            json_path, trust_remote_code):
    """Generate with a model (and a base model), score, and compare with confidence intervals.

    Prompts are rendered exactly as in training minus the response; generation is greedy,
    batched with left padding, and stops at EOS or the template's end of turn. Classification
    outputs are mapped to the spec's labels (unmappable ones count as wrong and are listed).
    Every aggregate gets a 95% bootstrap interval; with a base model, a paired bootstrap gives
    the interval of the difference and its p-value.
    """
    from sftkit.console import err_console, plain, print_skipped
    from sftkit.io import atomic_write_json, check_not_input, protect_inputs
    from sftkit.registry import get_registry
    from sftkit.reporting import write_reports
    from sftkit.types import Result

    protect_inputs([data, spec])
    if json_path:
        check_not_input(json_path, "--json")
    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    result = run_eval(
        model, data, spec=spec, columns=columns, instruction=instruction, loader=loader,
        loader_options=parse_key_values(loader_options, "--loader-option"), template=template,
        template_options=parse_key_values(template_options, "--template-option") or None, metrics=names,
        metric_options=parse_metric_options(metric_options), compare=compare, no_compare=no_compare,
        max_new_tokens=max_new_tokens, batch_size=batch_size, limit=limit, resamples=resamples, seed=seed,
        trust_remote_code=trust_remote_code, skip_invalid=skip_invalid,
    )
    print_summary(result)
    print_skipped([error["message"] for error in result.get("skipped_lines", [])])
    report = Result("eval", f"sftkit eval: {result['models']['tuned']['name']} on {Path(data).name}", result)
    written = write_reports(report, report_dir, get_registry())
    if json_path:
        written.append(atomic_write_json(Path(json_path), result))
    err_console.print(plain("reports: " + ", ".join(str(p) for p in written if p), "dim"))
