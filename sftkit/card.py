"""The model card of a run folder: ``README.md`` in the Hugging Face model-card convention.

YAML front matter (``base_model``, ``library_name``, ``license`` and ``language`` where the
base model declares them, ``datasets`` where a data file comes from the Hugging Face hub
cache, ``pipeline_tag``, ``tags``), then the prompt format, the training settings, the data,
the validation summary, the losses and, once ``sftkit eval`` has run on the folder, the eval
headline with its intervals. ``sftkit train`` writes it (replacing PEFT's empty template),
``sftkit eval`` on a run folder rewrites its evaluation section, ``sftkit export`` writes one
into the exported folder.

Every string that comes from the data, the recipe or a file name is escaped with ``md()``:
HTML-significant characters become entities and Markdown's inline control characters are
backslash-escaped, so a file called ``<script>.jsonl`` or an instruction with ``*`` and ``|``
shows as written and cannot inject markup or break a table.
"""
from __future__ import annotations

import html
import json
import re
import shlex
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"
EVAL_START = "<!-- sftkit:evaluation -->"
EVAL_END = "<!-- /sftkit:evaluation -->"
HUB_DATASET = re.compile(r"datasets--(?P<owner>[^/]+?)--(?P<name>[^/]+)/snapshots/")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MARKDOWN = re.compile(r"([\\`*_\[\]|~$#])")


def md(text: object) -> str:
    """A data string safe inside Markdown text or a table cell: HTML entities for ``& < > " '``,
    a backslash before Markdown's inline control characters, line breaks as spaces."""
    flat = " ".join(("" if text is None else str(text)).splitlines())
    return _MARKDOWN.sub(r"\\\1", html.escape(flat, quote=True))


def code(text: object) -> str:
    """A data string in a code font: ``<code>`` around ``md(text)`` (Markdown parses the inside of
    inline HTML, so it is escaped the same way; a backtick cannot end it early)."""
    return f"<code>{md(text)}</code>"


# -- what the card knows about a base model --------------------------------------------------------

def base_model_facts(name: str) -> dict[str, Any]:
    """``{"id": hub id or name, "license": ..., "language": [...]}`` for a base model name; the
    license and language only where the model declares them (absent otherwise).

    ``smollm2-135m``: ``sftkit.models.OFFLINE_FACTS`` (the hub id, and the license and languages
    its GGUF file declares; the converted cache folder holds no model card). A local folder:
    its README.md front matter. A hub id: its README.md in the local hub cache, if there.
    ``tiny-random`` and anything else: unknown.
    """
    from sftkit.models import OFFLINE_FACTS

    if name in OFFLINE_FACTS:
        return dict(OFFLINE_FACTS[name])
    folder = Path(name)
    if folder.is_dir():
        return {"id": name, **_front_matter_facts(folder / CARD_FILE)}
    if HUB_ID.match(name):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, CARD_FILE)
        except Exception:  # an unusable cache only costs the license
            cached = None
        return {"id": name, **(_front_matter_facts(Path(cached)) if isinstance(cached, str) else {})}
    return {"id": name}


def _front_matter_facts(path: Path) -> dict[str, Any]:
    meta = read_front_matter(path)
    facts = {key: meta[key] for key in ("license", "language") if meta.get(key)}
    if isinstance(facts.get("language"), str):
        facts["language"] = [facts["language"]]
    return facts


def read_front_matter(path: str | Path) -> dict:
    """The YAML front matter of a Markdown file (``{}`` when it has none or it does not parse)."""
    import yaml

    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = re.match(r"---\r?\n(.*?)\r?\n---\r?\n", text, re.S)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


# -- the card ----------------------------------------------------------------------------------------

def front_matter(info: dict, *, library: str | None = None) -> dict[str, Any]:
    """The card's metadata (the Hugging Face model-card keys)."""
    facts = base_model_facts(str(info["base_model"]))
    lora = info["method"] == "lora"
    meta: dict[str, Any] = {"base_model": facts["id"], "library_name": library or ("peft" if lora else "transformers")}
    if facts.get("license"):
        meta["license"] = facts["license"]
    if facts.get("language"):
        meta["language"] = facts["language"]
    paths = [d.get("path", "") for d in (info.get("recipe") or {}).get("data") or []]
    datasets = sorted({f"{m['owner']}/{m['name']}" for p in paths if (m := HUB_DATASET.search(str(p)))})
    if datasets:
        meta["datasets"] = datasets
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["sftkit", "sft", "lora" if lora else "full-fine-tuning"] + (
        [f"base_model:adapter:{facts['id']}"] if lora and library is None else [])
    return meta


def render_card(info: dict, result: dict | None, evaluation: str | None = None, *, run_dir: str | Path,
                exported: dict | None = None) -> str:
    """The whole README.md: front matter and the sections, from the run description
    (``sftkit_run.json``), the train result (``train.json``; None: its sections say unknown) and
    the evaluation section (None: not evaluated yet)."""
    import yaml

    meta = front_matter(info, library="transformers" if exported else None)
    parts = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    parts += _summary(info, result, meta, run_dir, exported)
    parts += _prompt_format(info)
    parts += _training(info, result)
    parts += _data(info, result)
    parts += _results(result)
    parts += [EVAL_START, evaluation or _not_evaluated(run_dir), EVAL_END, ""]
    return "\n".join(parts)


def _shell(path: str | Path) -> str:
    text = str(path)
    return "RUN_DIR" if any(c in text for c in "`\n\r") else shlex.quote(text)


def _summary(info: dict, result: dict | None, meta: dict, run_dir: str | Path, exported: dict | None) -> list[str]:
    lora = info["method"] == "lora"
    summary = (result or {}).get("summary") or {}
    what = "A LoRA adapter for" if lora and not exported else "A fine-tuned version of"
    examples = sum(d.get("used", 0) for d in (result or {}).get("data") or [])
    lines = [f"# {md(Path(str(exported['out'] if exported else run_dir)).name)}", "",
             f"{what} {code(meta['base_model'])}, trained with sftkit {md(info.get('sftkit_version'))} "
             f"({'LoRA' if lora else 'full fine-tuning'}, template {code(info.get('template'))}, masking "
             f"{code(info.get('masking'))}" + (f", {summary['steps']} steps on {examples:,} examples" if summary else "")
             + ")."]
    if exported:
        lines += ["", f"Exported by `sftkit export` from the run folder {code(exported['run_dir'])}"
                  + (" with the adapter merged into the base weights" if lora else "")
                  + f", in {md(exported['dtype'])}: a plain transformers folder (safetensors, the tokenizer with "
                  "the training chat template, a generation config with the stop tokens)."]
    license_line = (f"License: {code(meta['license'])}, as declared by the base model." if meta.get("license") else
                    "License: not known to sftkit (the base model declares none it could read); check the base "
                    "model's license before you share this model.")
    lines += ["", license_line, "", "## Use", ""]
    if exported:
        auto = "AutoModelForSeq2SeqLM" if exported.get("encoder_decoder") else "AutoModelForCausalLM"
        answer = ("answer = model.generate(ids)[0, 1:]   # greedy (the decoder's start token dropped)"
                  if exported.get("encoder_decoder") else
                  "answer = model.generate(ids)[0, ids.shape[1]:]   # greedy, stops as sftkit does")
        lines += ["```python", f"from transformers import {auto}, AutoTokenizer", "",
                  f"folder = {json.dumps(str(exported['out']))}",
                  "tokenizer = AutoTokenizer.from_pretrained(folder)",
                  f"model = {auto}.from_pretrained(folder)",
                  'messages = [{"role": "user", "content": "..."}]',
                  "prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)",
                  'ids = tokenizer(prompt, return_tensors="pt").input_ids   # tokenized as in training',
                  answer,
                  "print(tokenizer.decode(answer, skip_special_tokens=True))",
                  "```", ""]
        return lines
    folder = _shell(run_dir)
    lines += ["```bash", f"sftkit chat {folder} --compare {_shell(info['base_model'])}   # talk to it, beside its base",
              f"sftkit eval --model {folder} --data test.jsonl   # base versus tuned with intervals",
              f"sftkit export {folder} merged/      # a plain transformers folder" + (" (adapter merged)" if lora else ""),
              "```", ""]
    return lines


def _prompt_format(info: dict) -> list[str]:
    spec = info.get("spec") or {}
    lines = ["## Prompt format", "",
             f"Template {code(info.get('template'))}"
             + (f" with options {code(json.dumps(info.get('template_options'), sort_keys=True))}"
                if info.get("template_options") else "")
             + "; the saved tokenizer's `chat_template` renders the training prompt where the template has a Jinja "
               "form (`tokenizer.apply_chat_template(messages, add_generation_prompt=True)`).", ""]
    if spec.get("instruction"):
        lines += [f"Every training prompt carries the constant instruction \u201c{md(spec['instruction'])}\u201d; "
                  "the data supplied the input (`sftkit chat` adds the instruction for you).", ""]
    if spec.get("labels"):
        lines += ["Answers: " + ", ".join(code(label) for label in spec["labels"]) + ".", ""]
    if info.get("added_tokens"):
        lines += ["Tokens added to the tokenizer: " + ", ".join(code(t) for t in info["added_tokens"]) + ".", ""]
    return lines


def _training(info: dict, result: dict | None) -> list[str]:
    recipe = info.get("recipe") or {}
    summary = (result or {}).get("summary") or {}
    rows = [("base model", code(info["base_model"])), ("method", md(info["method"]))]
    if info["method"] == "lora":
        rows.append(("LoRA", f"r {md(recipe.get('lora_r'))}, alpha {md(recipe.get('lora_alpha'))}, dropout "
                             f"{md(recipe.get('lora_dropout'))}, modules {md(', '.join(recipe.get('target_modules') or []))}"))
    rows += [
        ("template / masking", f"{code(info.get('template'))} / {code(info.get('masking'))}"
                               + (f" {code(json.dumps(info['masking_options'], sort_keys=True))}"
                                  if info.get("masking_options") else "")),
        ("max length", md(info.get("max_length"))),
        ("steps", md(f"{summary['steps']} of {summary['planned_steps']}" + (" (stopped early)" if summary.get("stopped_early") else ""))
         if summary else md(recipe.get("max_steps") or f"{recipe.get('epochs')} epochs")),
        ("batch", md(f"{recipe.get('batch_size')} examples x {recipe.get('grad_accum')} accumulation x "
                     f"{summary.get('processes', 1)} process(es)")),
        ("learning rate", md(f"{recipe.get('lr')} ({recipe.get('scheduler')}, warmup {recipe.get('warmup_ratio')}, "
                             f"weight decay {recipe.get('weight_decay')})")),
        ("packing", md("padding-free packing" if recipe.get("packing") else "padded batches")),
        ("precision", md(recipe.get("precision"))),
        ("seed", md(recipe.get("seed"))),
    ]
    if summary:
        rows.append(("parameters trained", md(f"{summary['trainable_parameters']:,} of {summary['parameters']:,}")))
    lines = ["## Training", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return lines + ["", "The resolved recipe is `recipe.yaml` in the run folder; the losses per step are in "
                        "`metrics.jsonl` and `train.html`.", ""]


def _data(info: dict, result: dict | None) -> list[str]:
    spec = info.get("spec") or {}
    lines = ["## Data", ""]
    described = f"Dataset spec {code(spec.get('name'))}" if spec.get("name") else "Dataset spec unknown"
    described += f" (format {code(spec.get('format'))}, task {code(spec.get('task') or 'generation')})"
    if spec.get("description"):
        described += f": {md(str(spec['description']).rstrip('. '))}"
    lines += [described + ".", ""]
    sources = (result or {}).get("data")
    if not sources:
        paths = [d.get("path") for d in (info.get("recipe") or {}).get("data") or []]
        return lines + ["Training files: " + ", ".join(code(Path(str(p)).name) for p in paths) + ".", ""]
    lines += ["| file | weight | rows | used | skipped lines | truncated | tokens | trained tokens |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for source in sources:
        lines.append(f"| {code(Path(str(source.get('path'))).name)} | {md(source.get('weight'))} | "
                     f"{source.get('rows', 0):,} | {source.get('used', 0):,} | {source.get('skipped_lines', 0):,} | "
                     f"{source.get('truncated', 0):,} | {source.get('tokens', 0):,} | {source.get('trained_tokens', 0):,} |")
    evals = (result or {}).get("eval_data")
    if evals:
        lines += ["", f"Eval loss on {code(Path(str(evals.get('path'))).name)}: {evals.get('used', 0):,} examples, "
                      f"{evals.get('tokens', 0):,} tokens."]
    lines += ["", "### Validation", ""]
    validation = (result or {}).get("validation")
    if not validation:
        lines += ["`sftkit validate` did not run before training (`--no-validate`)."]
    else:
        lines += ["| file | rows | errors | warnings | infos |", "| --- | --- | --- | --- | --- |"]
        for path, counts in validation.items():
            lines.append(f"| {code(Path(str(path)).name)} | {counts.get('rows', 0):,} | {counts.get('errors', 0)} | "
                         f"{counts.get('warnings', 0)} | {counts.get('infos', 0)} |")
        lines += ["", "The full report is `validate.html` where `sftkit validate` wrote it."]
    return lines + [""]


def _results(result: dict | None) -> list[str]:
    summary = (result or {}).get("summary")
    lines = ["## Training results", ""]
    if not summary:
        return lines + ["No train result (`train.json`) was found in the run folder.", ""]
    loss = (f"Training loss {summary['first_loss']:.4f} at the first step, {summary['final_loss']:.4f} at the last"
            if summary.get("first_loss") is not None else "No training loss was recorded")
    lines.append(loss + (f"; best eval loss {summary['best_eval_loss']:.4f}." if summary.get("best_eval_loss") is not None
                         else "."))
    lines += ["", f"{summary['steps']} steps, {summary.get('tokens', 0):,} tokens ({summary.get('trained_tokens', 0):,} "
                  f"trained) in {summary.get('train_seconds', 0):,.1f} s: {summary.get('tokens_per_s', 0):,.1f} tokens/s, "
                  f"{summary.get('trained_tokens_per_s', 0):,.1f} trained tokens/s.", ""]
    return lines


def _not_evaluated(run_dir: str | Path) -> str:
    return ("## Evaluation\n\nNot evaluated yet: "
            f"{code('sftkit eval --model ' + _shell(run_dir) + ' --data HELD_OUT.jsonl')} writes its headline here.")


def evaluation_section(result: dict) -> str:
    """The card's evaluation section from an ``sftkit eval`` result: the data, the models and
    the headline metrics with their intervals (and the difference with its p-value)."""
    from datetime import date

    conf = int(round(result.get("bootstrap", {}).get("confidence", 0.95) * 100))
    models = result.get("models") or {}
    roles = [role for role in ("base", "tuned") if role in models] or list(models)
    lines = ["## Evaluation", "",
             f"`sftkit eval` on {code(Path(str(result.get('data'))).name)} ({result.get('rows')} rows, task "
             f"{code(result.get('task'))}, greedy decoding, up to {(result.get('generation') or {}).get('max_new_tokens')} "
             f"new tokens), {date.today().isoformat()}: "
             + "; ".join(f"{md(role)} = {code(models[role].get('name'))}" for role in roles)
             + f". Values with their {conf}% bootstrap intervals.", ""]
    header = ["metric"] + roles + (["tuned - base", "p"] if "base" in roles and "tuned" in roles else [])
    lines += ["| " + " | ".join(md(h) for h in header) + " |", "|" + " --- |" * len(header)]
    headline = result.get("headline") or [result.get("primary")]
    for sub in headline:
        entry = (result.get("metrics") or {}).get(sub or "")
        if not entry:
            continue
        cells = [f"**{md(sub)}**"] + [_interval(entry.get(role)) for role in roles]
        if len(header) > len(roles) + 1 and "difference" in entry:
            diff = entry["difference"]
            cells += [f"{diff['value']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]", f"{diff['p_value']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "All metrics, the settings and every example are in the eval report (`eval.html`, `eval.json`)."]
    return "\n".join(lines)


def _interval(entry: dict | None) -> str:
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]" if entry else ""


# -- writing -----------------------------------------------------------------------------------------

def write_card(run_dir: str | Path, result: dict | None = None, evaluation: str | None = None) -> Path:
    """Write the run folder's README.md (at the end of training: ``result`` is the train result;
    None reads ``train.json``)."""
    from sftkit.io import atomic_write_text
    from sftkit.runs import read_run

    run_dir = Path(run_dir)
    info = read_run(run_dir)
    if result is None:
        result = _read_json(run_dir / "train.json")
    return atomic_write_text(run_dir / CARD_FILE, render_card(info, result, evaluation, run_dir=run_dir))


def update_card_evaluation(run_dir: str | Path, eval_result: dict) -> Path:
    """Put an ``sftkit eval`` result into the run folder's card (its evaluation section only;
    a folder without sftkit's card gets the whole card)."""
    from sftkit.io import atomic_write_text

    path = Path(run_dir) / CARD_FILE
    section = evaluation_section(eval_result)
    current = path.read_text("utf-8") if path.is_file() else ""
    start, end = current.find(EVAL_START), current.find(EVAL_END)
    if start < 0 or end < start:
        return write_card(run_dir, evaluation=section)
    return atomic_write_text(path, current[:start + len(EVAL_START)] + "\n" + section + "\n" + current[end:])


def record_evaluation(model: str | Path, eval_result: dict) -> Path | None:
    """After ``sftkit eval --model RUN_DIR``: the run folder's card gets the headline (None for
    a model that is not a run folder)."""
    from sftkit.runs import is_run_dir

    return update_card_evaluation(model, eval_result) if is_run_dir(model) else None


def export_card(run_dir: str | Path, folder: str | Path, dtype: str, *, out: str | Path | None = None) -> Path:
    """Write the card of an exported model into ``folder`` (named ``out`` in the text, where it is
    going): the run's card for plain transformers, its evaluation kept."""
    from sftkit.io import atomic_write_text
    from sftkit.runs import read_run

    run_dir, folder = Path(run_dir), Path(folder)
    current = (run_dir / CARD_FILE).read_text("utf-8") if (run_dir / CARD_FILE).is_file() else ""
    start, end = current.find(EVAL_START), current.find(EVAL_END)
    evaluation = current[start + len(EVAL_START):end].strip() if 0 <= start < end else None
    config = _read_json(folder / "config.json") or {}
    text = render_card(read_run(run_dir), _read_json(run_dir / "train.json"), evaluation, run_dir=run_dir,
                       exported={"run_dir": str(run_dir), "out": str(out or folder), "dtype": dtype,
                                 "encoder_decoder": bool(config.get("is_encoder_decoder"))})
    return atomic_write_text(folder / CARD_FILE, text)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
