"""``sftkit preview``: show exactly which tokens train, example by example."""
from __future__ import annotations

import json
from itertools import islice

import click

from sftkit.cli import data_options, render_options
from sftkit.errors import UsageError

TRAINED = ("black on #b7e4c0", "black on #8fd19e")
MASKED = ("#6b7280 on #f1f3f5", "#6b7280 on #e2e5e9")
PARTIAL = ("black on #ffe8a3", "black on #ffd966")


def token_rows(tokenized, tokenizer) -> list[dict]:
    """Per-token view: id, the exact text it covers, label and weight."""
    rows = []
    text = tokenized.text
    for i, (tid, label, weight, (start, end)) in enumerate(
        zip(tokenized.input_ids, tokenized.labels, tokenized.weights, tokenized.offsets)
    ):
        piece = text[start:end] if end > start else tokenizer.convert_ids_to_tokens(tid)
        rows.append({"index": i, "id": int(tid), "text": piece, "trained": label != -100, "weight": float(weight)})
        if tokenized.is_encoder_decoder:  # an encoder-decoder model: which side the token is on
            rows[-1]["side"] = "encoder" if i < tokenized.source_length else "decoder"
    return rows


def header(example, tok, rows) -> str:
    """The line above an example: its trained and masked tokens, and what truncation cut (for an
    encoder-decoder model, per side)."""
    trained = tok.num_trained
    if tok.is_encoder_decoder:
        source, target = tok.source_length, len(rows) - tok.source_length
        return (f"row {example.row}: encoder input {source} tokens"
                + (f" (cut, {tok.source_tokens_lost} tokens lost)" if tok.source_tokens_lost else "")
                + f"; decoder target {target} tokens, {trained} trained"
                + (f" (cut, {tok.trained_tokens_lost} trained tokens lost)" if tok.trained_tokens_lost else ""))
    return (f"row {example.row}: {trained} trained / {len(rows) - trained} masked tokens"
            + (f" (truncated from {tok.length_before_truncation}, {tok.trained_tokens_lost} trained tokens lost)"
               if tok.truncated else ""))


@click.command("preview")
@click.argument("data", type=click.Path(dir_okay=True))
@data_options
@render_options
@click.option("-n", "count", metavar="N", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many examples.")
@click.option("--start", metavar="ROW", type=click.IntRange(min=0), default=0, help="First row (0-based) to show.")
@click.option("--format", "fmt", type=click.Choice(["rich", "plain", "json"]), default="rich", show_default=True,
              help="rich: coloured tokens; plain: one token per line; json: machine-readable.")
def command(data, request, render, count, start, fmt):
    """Print rendered examples with trained tokens highlighted and masked tokens dimmed.

    Token boundaries are shown by alternating shades; each example ends with its counts of
    trained and masked tokens. This is exactly what `sftkit train` trains on.
    """
    from rich.rule import Rule
    from rich.text import Text

    from sftkit.console import console, err_console, inert_json, plain, print_skipped
    from sftkit.pipeline import prepare

    prepared = prepare(request.for_path(data), render)
    rows = prepared.examples()
    before = sum(1 for _ in islice(rows, start))  # the rows before --start (all of them, if it is past the end)
    examples = list(islice(rows, count))
    if not examples and start > 0:
        shown = f"{before:,} row" + ("" if before == 1 else "s") + (f" (0 to {before - 1:,})" if before > 1 else "")
        raise UsageError(f"--start {start} is past the end of {data}, which has {shown}",
                         hint=f"pass --start {max(0, before - count)} to see the last rows" if before else None)
    print_skipped([error.message for error in prepared.skipped])
    tokenized = prepared.encoder.encode_many(examples)
    tokenizer = prepared.tokenizer
    if fmt == "json":
        out = {"spec": prepared.spec.name, "note": prepared.note, "template": prepared.template_name,
               "masking": prepared.masking_name, "examples": [],
               "skipped": [{"line": e.line, "row": e.row, "message": e.message} for e in prepared.skipped]}
        for example, tok in zip(examples, tokenized):
            rows = token_rows(tok, tokenizer)
            item = {"row": example.row, "trained": tok.num_trained, "masked": len(rows) - tok.num_trained,
                    "truncated": tok.truncated, "tokens": rows}
            if tok.is_encoder_decoder:
                item.update(encoder_tokens=tok.source_length, decoder_tokens=len(rows) - tok.source_length,
                            source_tokens_lost=tok.source_tokens_lost, target_tokens_lost=tok.trained_tokens_lost)
            out["examples"].append(item)
        click.echo(inert_json(json.dumps(out, ensure_ascii=False, indent=1)))
        return
    err_console.print(plain(f"{prepared.note}; template {prepared.template_name}, masking {prepared.masking_name}, "
                            f"model {render.model}", "dim"))
    for marker, pieces in prepared.split_markers.items():
        err_console.print(plain(f"note: delimiter {marker!r} splits into {len(pieces)} tokens {pieces}; "
                                f"--add-special-tokens makes it one token", "yellow"))
    if prepared.added_tokens:
        err_console.print(plain(f"added special tokens: {prepared.added_tokens}", "dim"))
    for example, tok in zip(examples, tokenized):
        rows = token_rows(tok, tokenizer)
        title = header(example, tok, rows)
        if fmt == "plain":
            click.echo(f"== {title}")
            for r in rows:
                if tok.is_encoder_decoder and r["index"] in (0, tok.source_length):
                    click.echo(f"-- {'encoder input' if r['side'] == 'encoder' else 'decoder target'}")
                mark = "T" if r["trained"] else "M"
                w = "" if r["weight"] in (0.0, 1.0) else f" w={r['weight']:g}"
                click.echo(f"{mark} {r['id']:>6} {inert_json(json.dumps(r['text'], ensure_ascii=False))}{w}")
            continue
        console.print(Rule(plain(title), style="dim"))
        line = Text()
        for r in rows:
            if tok.is_encoder_decoder and r["index"] in (0, tok.source_length):
                if r["index"]:
                    console.print(line)
                    line = Text()
                side = "encoder input" if r["side"] == "encoder" else "decoder target"
                console.print(plain(f"{side}:", "bold dim"))
            shades = PARTIAL if 0 < r["weight"] < 1 else (TRAINED if r["trained"] else MASKED)
            style = shades[r["index"] % 2]
            piece = r["text"]
            if "\n" in piece:
                line.append(plain(piece.replace("\n", "↵"), style))
                line.append("\n" * piece.count("\n"))
            else:
                line.append(plain(piece, style))
        console.print(line)
    if fmt == "plain":
        return
    console.print(plain("legend: ", "dim") + Text("trained", style=TRAINED[0]) + plain(" ")
                  + Text("masked", style=MASKED[0]) + plain(" ") + Text("partial weight", style=PARTIAL[0]))
