"""An example third-party sftkit plugin: one component of each kind.

Each ``register_<kind>`` hook below hands sftkit its components. A component is a plain
function: its name is the function's name, the first docstring line is its help text, and its
keyword parameters (with defaults) are the options users set with ``--<kind>-option KEY=VALUE``.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

from sftkit import DataError, Issue, Segment, UsageError, hookimpl
from sftkit.io import atomic_write_text


# -- template ----------------------------------------------------------------------------------

def llama2_inst(example, context):
    """Llama 2 chat: [INST] <<SYS>> system <</SYS>> prompt [/INST] response</s>, turn after turn."""
    end = context.eos_token or "</s>"
    system = ""
    segments = []
    for index, message in enumerate(example.turns()):
        if message.role == "system":
            system = message.content
        elif message.role == "assistant":
            # The space before the response belongs to it (as in Llama 2's own chat template), so
            # the prompt alone is a token prefix of prompt + response.
            segments.append(Segment(" [/INST]", "assistant", "marker", index))
            segments.append(Segment(" " + message.content, "assistant", "content", index))
            segments.append(Segment(end, "assistant", "end", index))
        else:
            head = f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n" if system else "[INST] "
            system = ""  # the system prompt goes into the first instruction only
            segments.append(Segment(head, "user", "marker", index))
            segments.append(Segment(message.content, "user", "content", index))
    return segments


# Markers as they appear in context: " [/INST]" and " <<SYS>>" follow a space, which the tokenizer
# merges into their first token ("Ġ["); declared so, the content check still finds "[/INST]" in a
# field and the tokenization check compares the tokens the model really sees.
llama2_inst.markers = ("[INST]", " [/INST]", " <<SYS>>", "<</SYS>>")
llama2_inst.special_tokens = ("[INST]", "[/INST]")


# -- masking strategy --------------------------------------------------------------------------

def turn_decay(segments, decay: float = 0.5):
    """Train every assistant turn; earlier turns with weight decay**(turns before the last)."""
    if not 0.0 < decay <= 1.0:
        raise UsageError(f"turn_decay: decay must be in (0, 1], got {decay}", hint="e.g. --masking-option decay=0.5")
    turns = sorted({s.turn for s in segments if s.is_response})
    distance = {turn: len(turns) - 1 - i for i, turn in enumerate(turns)}
    return [decay ** distance[s.turn] if s.is_response else 0.0 for s in segments]


# -- loader ------------------------------------------------------------------------------------

def txt_pairs(path: Path, question: str = "Q:", answer: str = "A:"):
    """Plain text Q:/A: pairs separated by blank lines (a line without a prefix continues the field)."""
    record, field, start = {}, None, 0
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if not text.strip():
                if record:
                    yield _finish(record, path, start)
                record, field = {}, None
                continue
            if not record:
                start = line_no
            if text.startswith(question):
                if "instruction" in record:
                    raise DataError(f"a second {question!r} before the {answer!r} line", path=str(path), line=line_no,
                                    hint="separate records with a blank line")
                record["instruction"], field = text[len(question):].strip(), "instruction"
            elif text.startswith(answer):
                if "instruction" not in record:
                    raise DataError(f"an {answer!r} line without a {question!r} line before it", path=str(path),
                                    line=line_no)
                record["output"], field = text[len(answer):].strip(), "output"
            elif field is None:
                raise DataError(f"expected a line starting with {question!r}", path=str(path), line=line_no,
                                hint=f"each record is a {question} line, then an {answer} line")
            else:
                record[field] += "\n" + text
    if record:
        yield _finish(record, path, start)


def _finish(record: dict, path: Path, line: int) -> dict:
    if "output" not in record:
        raise DataError("a question without an answer line", path=str(path), line=line)
    return record


txt_pairs.suffixes = (".txt",)


# -- validator ---------------------------------------------------------------------------------

def profanity(context, words: tuple = ("damn", "crap", "bloody"), severity: str = "warning"):
    """Flag responses that contain a listed word (the model would learn to say it)."""
    if not words:
        return
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    rows, found = [], set()
    for index, example in enumerate(context.examples):
        hits = pattern.findall(example.response_text())
        if hits:
            rows.append(index)
            found.update(hit.lower() for hit in hits)
    if rows:
        yield Issue("profanity", "profanity", severity,
                    f"{len(rows)} response(s) contain a listed word ({', '.join(sorted(found))})",
                    rows=rows, details={"words": sorted(found)})


# -- metric ------------------------------------------------------------------------------------

def length_ratio(predictions, references, unit: str = "words"):
    """Prediction length divided by reference length per example (1.0: same length)."""
    if unit not in ("words", "chars"):
        raise UsageError(f"length_ratio: unit must be words or chars, got {unit!r}")

    def size(text):
        return len(text.split()) if unit == "words" else len(text)

    return {"length_ratio": [size(p) / max(size(r), 1) for p, r in zip(predictions, references)]}


# -- reporter ----------------------------------------------------------------------------------

def markdown(result, output_dir: Path, filename: str = ""):
    """Write the result as Markdown (<kind>.md): scalars, then a table per list or mapping."""
    lines = [f"# {_md(result.title)}", "", f"kind: {_md(result.kind)}", ""]
    scalars = {k: v for k, v in result.data.items() if not isinstance(v, (dict, list))}
    lines += _table(["field", "value"], [[k, v] for k, v in scalars.items()])
    for key, value in result.data.items():
        if isinstance(value, dict):
            lines += ["", f"## {_md(key)}", ""] + _table(["key", "value"], [[k, v] for k, v in value.items()])
        elif isinstance(value, list):
            columns = list(dict.fromkeys(k for item in value if isinstance(item, dict) for k in item)) or ["value"]
            rows = [[item.get(c) for c in columns] if isinstance(item, dict) else [item] for item in value]
            lines += ["", f"## {_md(key)}", ""] + _table(columns, rows)
    return atomic_write_text(Path(output_dir) / (filename or f"{result.kind}.md"), "\n".join(lines) + "\n")


markdown.default = True  # runs with the built-in json and html unless --no-reporter markdown leaves it out


def _md(value) -> str:
    """Data as inert Markdown text: HTML escaped, Markdown punctuation backslashed, one line."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = html.escape(text.replace("\r", " ").replace("\n", " "))
    return re.sub(r"([\\`*_{}\[\]()#+!|~-])", r"\\\1", text)


def _table(columns, rows) -> list[str]:
    if not rows:
        return []
    out = ["| " + " | ".join(_md(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    out += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
    return out


# -- generator ---------------------------------------------------------------------------------

def one_by_one(model, tokenizer, prompt_ids, stops, max_new_tokens):
    """Greedy model.generate one prompt at a time (slow and simple: no padding, no batches)."""
    import torch

    from sftkit.generate import finish

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    extra = {"stop_strings": list(stops.strings), "tokenizer": tokenizer} if stops.strings else {}
    out = []
    for ids in prompt_ids:
        input_ids = torch.tensor([list(ids)], device=model.device)
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                    eos_token_id=list(stops.token_ids) or None, **extra)
        out.append(finish(tokenizer, output[0, len(ids):].tolist(), stops, max_new_tokens))
    return out


# -- the hooks: sftkit calls each with a ``register`` function ---------------------------------

@hookimpl
def register_templates(register):
    register(llama2_inst)


@hookimpl
def register_masking_strategies(register):
    register(turn_decay)


@hookimpl
def register_loaders(register):
    register(txt_pairs)


@hookimpl
def register_validators(register):
    register(profanity)


@hookimpl
def register_metrics(register):
    register(length_ratio)


@hookimpl
def register_reporters(register):
    register(markdown)


@hookimpl
def register_generators(register):
    register(one_by_one)
