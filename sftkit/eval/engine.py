"""The evaluation engine: ``run_eval`` renders every prompt exactly as in training minus the
response, generates with each model in turn (``sftkit.generate``), maps classification outputs to
labels (``sftkit.labels``), scores (``sftkit.eval.scoring``) and returns the result data.

    result = run_eval(DataRequest("test.jsonl"), RenderSettings(), EvalSettings(model="runs/demo"))

``settings.model`` is called *tuned* and ``settings.compare`` *base* in the reports. The
template, its options and every metric with its options are checked before any model loads.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Mapping

from sftkit.errors import DataError, UsageError
from sftkit.generate import DEFAULT_BATCH_TOKENS
from sftkit.eval.scoring import (ModelRun, describe_metrics, headline_subs, resolve_metrics, sanity_warnings,
                                 score)

DEFAULT_MAX_NEW_TOKENS = {"classification": 16}
FALLBACK_MAX_NEW_TOKENS = 128
ROLES = ("base", "tuned")


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and how: the model (a run folder or a model name), the model to compare
    with (default for a run folder: its base model), metrics (default: those declared for the
    task) with options, the generation budget and batch, and the bootstrap."""

    model: str
    models: tuple[str, ...] = ()  # two or more: an N-way comparison (``model`` is then the first)
    compare: str | None = None
    no_compare: bool = False
    metrics: tuple[str, ...] | None = None
    metric_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_new_tokens: int | None = None
    batch_size: int = 32
    limit: int | None = None
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    max_invalid_share: float = 0.1
    device: str = "auto"
    generator: str | None = None
    generator_options: Mapping[str, Any] = field(default_factory=dict)
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS
    by: str | None = None  # --by COLUMN; None: the task field or the label; "none": no breakdown
    share_base: bool = True  # several models: LoRA runs on one base attach to it instead of loading it again


def run_eval(request: Any, render: Any, settings: EvalSettings) -> dict:
    """Evaluate ``settings.model`` (and the model it is compared with), or with ``settings.models``
    several models against one reference, on the rows of ``request`` (a ``DataRequest``),
    rendered per ``render`` (template and options; a run folder's own by default); returns the
    report data (JSON-ready)."""
    from sftkit.pipeline import prepare
    from sftkit.registry import get_registry

    registry = get_registry()
    names = [str(name) for name in (settings.models or (settings.model,))]
    infos = [_run_info(name) for name in names]
    run_info = infos[0]
    if len(names) > 1:
        plan, reference = _several(names, settings)
    else:
        compare = _compare_with(settings, run_info)
        plan, reference = [("tuned", names[0])] + ([("base", compare)] if compare is not None else []), None
    render, notes = _with_run_template(render, run_info)
    notes += _other_templates(render, plan[len(plan) - len(names):], infos) if len(names) > 1 else []
    request = _with_run_spec(request, run_info)
    prepared = prepare(request, dataclasses.replace(render, model=None), registry=registry)
    examples = _examples(prepared, settings.limit)
    task = prepared.spec.task or "generation"
    classification = task == "classification"
    references = references_for(examples, classification)
    mapper = _label_mapper(prepared, examples, references) if classification else None
    from sftkit.eval.breakdown import breakdown, group_values

    grouping = group_values(settings.by, request, examples, classification)
    metrics = resolve_metrics(list(settings.metrics or ()), task, settings.metric_options, registry,
                              labels=mapper.labels if mapper else None)
    metric_info = describe_metrics(metrics)  # before any model loads: options only a metric can judge fail here
    max_new = settings.max_new_tokens or DEFAULT_MAX_NEW_TOKENS.get(task, FALLBACK_MAX_NEW_TOKENS)
    from sftkit.eval.generation import ModelPool, resolve_generator

    generator = resolve_generator(registry, settings.generator, settings.generator_options,
                                  batch_size=settings.batch_size, max_batch_tokens=settings.max_batch_tokens)

    _quiet_transformers()
    from sftkit.models import resolve_device

    device = resolve_device(settings.device)
    if str(device) == "cpu":
        _use_idle_cores()
    runs: dict[str, ModelRun] = {}
    prompts = None
    # several models: adapters on one base reuse it (the base first, its runs after it)
    with ModelPool(device, render.trust_remote_code, share=len(names) > 1 and settings.share_base) as pool:
        if len(names) > 1:
            prompts = _render_prompts(pool, names[0], examples, prepared.encoder)
        for role, name in (_sharing_order(plan) if len(names) > 1 else plan):
            runs[role], prompts = generate_with(role, name, examples, prepared.encoder, prompts,
                                                max_new_tokens=max_new, generator=generator,
                                                trust_remote_code=render.trust_remote_code, device=device, pool=pool)
            if mapper is not None:
                runs[role].labels = mapper.map_many(runs[role].texts)
    order = [role for role in ROLES if role in runs] if reference is None else [role for role, _ in plan]
    runs = {role: runs[role] for role in order}
    table, metric_notes = score(metrics, runs, references, classification, resamples=settings.resamples,
                                seed=settings.seed, confidence=settings.confidence, reference=reference)
    warn = notes + [w for run in runs.values() for w in sanity_warnings(run, max_new)] + metric_notes
    if mapper is not None:
        warn += invalid_warnings(runs, settings.max_invalid_share)
    result = {
        "data": str(prepared.path), "rows": len(examples), "limit": settings.limit, "spec": prepared.spec.name,
        "spec_note": prepared.note, "task": task, "template": prepared.template_name,
        "template_options": dict(render.template_options),
        "models": {role: {"name": run.name, "run": _run_summary(run.run_info), "seconds": round(run.seconds, 3),
                          "tokens": sum(g.tokens for g in run.generations)} for role, run in runs.items()},
        "generation": {"max_new_tokens": max_new, "batch_size": settings.batch_size, "decoding": "greedy",
                       "padding": _padding(names[0], run_info, render.trust_remote_code),
                       "max_batch_tokens": settings.max_batch_tokens,
                       "generator": generator.name, "generator_version": generator.version,
                       "generator_options": generator.options},
        "bootstrap": {"resamples": settings.resamples, "seed": settings.seed, "confidence": settings.confidence,
                      "interval": "percentile",
                      "p_value": "paired, shifted to the null (Berg-Kirkpatrick et al. 2012), two-sided"},
        "metric_info": metric_info,
        "metrics": table,
        "primary": next(iter(table), None),
        "headline": headline_subs(metrics, table),
        "warnings": warn,
        "skipped_lines": [{"line": e.line, "row": e.row, "message": e.message} for e in prepared.skipped],
    }
    if reference is not None:
        compared = len(runs) - 1
        result["reference"] = reference
        result["bootstrap"]["correction"] = (
            f"Holm-Bonferroni over the {compared} comparison(s) with the reference {reference}, per sub-metric "
            f"(p_holm); every comparison uses the same {settings.resamples} resamples")
    if grouping is not None:
        column, source, values = grouping
        result["breakdown"], small = breakdown(column, source, values, metrics, runs, references, classification,
                                               resamples=settings.resamples, seed=settings.seed,
                                               confidence=settings.confidence, reference=reference)
        result["warnings"] += small
    if mapper is not None:
        result["classification"] = _classification(mapper, runs, examples, references)
    result["examples"] = _example_rows(examples, prompts, references, runs, reference)
    if grouping is not None:
        for item, value in zip(result["examples"], grouping[2]):
            item["group"] = value
    from sftkit.eval.provenance import provenance, text_sha256

    for item in result["examples"]:
        item["prompt_sha256"] = text_sha256(item["prompt"])
    made = provenance(registry=registry, request=request, prepared=prepared, render=render,
                      generation=result["generation"], prompt_hashes=[e["prompt_sha256"] for e in result["examples"]])
    for entry in result["models"].values():
        entry["provenance"] = {**made, "model": entry["name"]}
    return result


def _several(names: list[str], settings: EvalSettings) -> tuple[list[tuple[str, str]], str]:
    """The models of an N-way run, keyed ``model_1``... (and ``base`` for ``--compare``), and the reference."""
    from sftkit.runs import is_run_dir, open_run

    if settings.compare and settings.no_compare:
        raise UsageError("--compare and --no-compare exclude each other")
    plan = [(f"model_{i + 1}", name) for i, name in enumerate(names)]
    if settings.compare:
        if is_run_dir(settings.compare):
            open_run(settings.compare)  # a damaged run folder is reported before any model loads
        return [("base", str(settings.compare))] + plan, "base"
    return plan, plan[0][0]


def _other_templates(render: Any, plan: list[tuple[str, str]], infos: list[dict | None]) -> list[dict]:
    """A note for each further run folder trained with another template than the one evaluated."""
    out = []
    for (role, _name), info in list(zip(plan, infos))[1:]:
        trained_with = (info or {}).get("template")
        if trained_with and trained_with != render.template:
            out.append({"model": role, "code": "template_differs", "rows": [],
                        "message": f"{role}: trained with template {trained_with!r}, evaluated with "
                                   f"{render.template!r} (prompts differ from training)"})
    return out


def _render_prompts(pool: Any, name: str, examples: list, encoder: Any) -> list[str]:
    """Every prompt rendered once, with the tokenizer of ``name`` (the first model), for all models."""
    _source, tokenizer, _info = pool.tokenizer_only(name)
    encoder = encoder.with_tokenizer(tokenizer)
    return [encoder.prompt(example) for example in examples]


def _sharing_order(plan: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Generation order: models grouped by the base they load, each base before the LoRA runs on it."""
    from sftkit.eval.generation import adapter_base

    def key(item: tuple[str, str]) -> tuple[str, bool]:
        base = adapter_base(item[1])
        return (base or item[1], base is not None)

    return sorted(plan, key=key)


# -- before any model loads ----------------------------------------------------------------------

def _run_info(model: str) -> dict | None:
    """The run description when ``model`` is a run folder (checked), else None."""
    from sftkit.runs import is_run_dir, is_sftkit_folder, not_a_model_folder, open_run

    if is_run_dir(model):
        return open_run(model)
    if Path(model).is_dir() and is_sftkit_folder(Path(model)):
        raise not_a_model_folder(model)  # a run that did not finish: how to finish it
    if Path(model).is_dir() and (Path(model) / "adapter_config.json").exists():
        raise UsageError(f"{model} holds an adapter but no sftkit_run.json",
                         hint="pass the --output-dir of a finished `sftkit train`")
    return None


def _compare_with(settings: EvalSettings, run_info: dict | None) -> str | None:
    """The second model: ``--compare``, else a run folder's base model (unless ``--no-compare``)."""
    from sftkit.runs import is_run_dir, open_run

    compare = settings.compare
    if compare and settings.no_compare:
        raise UsageError("--compare and --no-compare exclude each other")
    if compare is None and run_info is not None and not settings.no_compare:
        compare = str(run_info["base_model"])
    if compare is not None and is_run_dir(compare):
        open_run(compare)  # a damaged run folder is reported before any model loads
    return compare


def _with_run_spec(request: Any, run_info: dict | None) -> Any:
    """A run folder's saved dataset spec, when the user named no spec, columns or instruction."""
    from sftkit.spec import DEFAULT_COLUMNS, spec_from_dict

    run_spec = (run_info or {}).get("spec")
    if request.spec or request.columns or request.instruction is not None:
        return request
    if not isinstance(run_spec, dict) or not run_spec.get("format"):
        return request
    # DatasetSpec.to_dict lists the resolved columns only: a default column the spec removed
    # (``instruction: null`` with a constant instruction) must stay removed when read back.
    saved = dict(run_spec)
    saved["columns"] = {**{name: None for name in DEFAULT_COLUMNS.get(saved["format"], {})},
                        **(saved.get("columns") or {})}
    return dataclasses.replace(request, spec=spec_from_dict(saved, "from the run folder"))


def _with_run_template(render: Any, run_info: dict | None) -> tuple[Any, list[dict]]:
    """A run folder's template and options, unless the user chose one (then a note, if it differs)."""
    trained_with = (run_info or {}).get("template")
    if run_info is not None and render.template is None:
        options = render.template_options or dict(run_info.get("template_options") or {})
        return dataclasses.replace(render, template=trained_with or None, template_options=options), []
    if trained_with and render.template != trained_with:
        return render, [{"model": "tuned", "code": "template_differs", "rows": [],
                         "message": f"tuned: trained with template {trained_with!r}, evaluated with "
                                    f"{render.template!r} (prompts differ from training)"}]
    return render, []


def _examples(prepared: Any, limit: int | None) -> list:
    """The (limited) evaluation rows; a row with a data problem is an error naming it."""
    rows = list(islice(prepared.examples(), limit) if limit else prepared.examples())
    if not rows:
        raise DataError("no examples to evaluate", path=prepared.path)
    for example in rows:
        problems = example.meta.get("problems")
        if problems:
            _code, name, message = problems[0]
            raise DataError(message, path=prepared.path, row=example.row, field=name,
                            hint="fix the row, or run `sftkit validate` to list every problem")
    return rows


def references_for(examples: list, classification: bool) -> list[str]:
    """The reference answer of each example (the label for classification)."""
    if classification:
        return [(e.label if e.label is not None else e.response_text()).strip() for e in examples]
    return [e.response_text() for e in examples]


def _label_mapper(prepared: Any, examples: list, references: list[str]) -> Any:
    """The mapper from generated text to the spec's labels; every reference must be one."""
    from sftkit.labels import LabelMapper

    mapper = LabelMapper(list(prepared.spec.labels) or sorted(set(references)))
    for example, reference in zip(examples, references):
        if reference not in mapper.labels:
            raise DataError(f"reference label {reference!r} is not one of the spec's labels {mapper.labels}",
                            path=prepared.path, row=example.row, field="label",
                            hint="add it to labels: in the spec, or fix the row")
    return mapper


# -- generation ------------------------------------------------------------------------------------

def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - cosmetic only
        pass


def _use_idle_cores() -> None:
    import torch

    from sftkit.console import err_console, plain
    from sftkit.threads import configure

    if not torch.cuda.is_available():
        err_console.print(plain(configure(), "dim"))


def generate_with(role: str, name: str, examples: list, encoder: Any, prompts: list[str] | None = None, *,
                  max_new_tokens: int, generator: Any, trust_remote_code: bool, device: Any = "cpu",
                  pool: Any = None) -> tuple[ModelRun, list[str]]:
    """Load one model onto ``device`` (through ``pool``, which may reuse a loaded base; default: a
    fresh load, freed afterwards with its GPU memory, so a second model never shares the device
    with the first) and generate for every prompt with ``generator`` (a ``GeneratorChoice``).

    Without ``prompts`` they are rendered with ``encoder`` (the template and its options) and
    this model's tokenizer; the prompts used are returned so every other model answers exactly
    the same ones.
    """
    from sftkit.console import err_console, plain
    from sftkit.eval.generation import ModelPool
    from sftkit.generate import stops_for
    from sftkit.pipeline import end_of_turn

    err_console.print(plain(f"{role}: loading {name}", "dim"))
    pool = pool if pool is not None else ModelPool(device, trust_remote_code)
    with pool.use(name, generator.loads_model) as (model, tokenizer, info):
        encoder = encoder.with_tokenizer(tokenizer)
        if prompts is None:
            prompts = [encoder.prompt(example) for example in examples]
        ends = sorted({end_of_turn(encoder.segments(example)) for example in examples})
        stops = stops_for(tokenizer, ends)
        prompt_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
        start = time.perf_counter()
        generations = generator.bound(model, tokenizer, prompt_ids, stops, max_new_tokens)
        seconds = time.perf_counter() - start
        del model
    if len(generations) != len(prompts):
        raise UsageError(f"generator {generator.name!r} returned {len(generations)} outputs for {len(prompts)} prompts",
                         hint="check it with sftkit.testing.check_generator")
    tokens = sum(g.tokens for g in generations)
    err_console.print(plain(f"{role}: {len(prompts)} outputs, {tokens} tokens in {seconds:.1f} s", "dim"))
    return ModelRun(role, str(name), info, [g.text.strip() for g in generations], generations, seconds), prompts


# -- the result ------------------------------------------------------------------------------------

def _classification(mapper: Any, runs: dict[str, ModelRun], examples: list, references: list[str]) -> dict:
    from sftkit.labels import classification_summary

    return {
        "labels": mapper.labels,
        "models": {role: classification_summary([m.label for m in run.labels], references, mapper.labels, run.labels)
                   for role, run in runs.items()},
        "invalid": {role: [{"row": examples[i].row, "output": run.texts[i], "reason": m.reason}
                           for i, m in enumerate(run.labels) if m.rule == "invalid"]
                    for role, run in runs.items()},
    }


def invalid_warnings(runs: Mapping[str, ModelRun], max_share: float) -> list[dict]:
    """One warning per classification model whose share of unmappable outputs exceeds ``max_share``."""
    out = []
    for role, run in runs.items():
        rows = [i for i, m in enumerate(run.labels or []) if m.rule == "invalid"]
        total = len(run.labels or [])
        if total and len(rows) / total > max_share:
            out.append({"model": role, "code": "invalid_share", "rows": rows,
                        "message": f"{role}: {len(rows)} of {total} outputs ({len(rows) / total:.1%}) map to no label, "
                                   f"more than --max-invalid-share {max_share:g} (they count as wrong; see the "
                                   f"unmapped outputs in the report)"})
    return out


def _padding(model: str, run_info: dict | None, trust_remote_code: bool) -> str:
    """How prompts were padded: ``left`` (a decoder-only model's prompt), or ``right`` for an
    encoder-decoder (its prompt is the encoder input; ``sftkit.generate_seq2seq``)."""
    from sftkit.errors import SftkitError
    from sftkit.models import is_encoder_decoder

    name = str(run_info["base_model"]) if run_info else model
    try:
        return "right" if is_encoder_decoder(name, trust_remote_code=trust_remote_code) else "left"
    except SftkitError:
        return "left"


def _run_summary(info: dict | None) -> dict | None:
    if not info:
        return None
    keys = ("base_model", "method", "template", "masking", "max_length", "added_tokens")
    return {k: info.get(k) for k in keys if k in info}


def _example_rows(examples: list, prompts: list[str], references: list[str], runs: dict[str, ModelRun],
                  reference: str | None = None) -> list[dict]:
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
        if reference is None and "base" in runs and "tuned" in runs:
            item["change"] = {sub: item["scores"]["tuned"][sub] - item["scores"]["base"][sub]
                              for sub in item["scores"]["tuned"] if sub in item["scores"]["base"]}
        elif reference is not None:
            base = item["scores"][reference]
            item["changes"] = {role: {sub: scores[sub] - base[sub] for sub in scores if sub in base}
                               for role, scores in item["scores"].items() if role != reference}
        out.append(item)
    return out
