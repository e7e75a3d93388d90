"""The HTML page of a training run: loss curves, speed, data summary and settings."""
from __future__ import annotations

from typing import Any

from sftkit import Result
from sftkit.plugins.reporters.html_base import cards, esc, line_chart, page, section, table


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(result: Result) -> str:
    """A self-contained page; every string from data or settings is escaped."""
    data = result.data
    s = data.get("summary", {})
    metrics = data.get("metrics", [])
    evals = data.get("eval_metrics", [])
    body = [cards([
        ("steps", f"{s.get('steps')} / {s.get('planned_steps')}"),
        ("first loss", _num(s.get("first_loss"))),
        ("final loss", _num(s.get("final_loss"))),
        ("best eval loss", _num(s.get("best_eval_loss"))),
        ("trained tokens/s", _num(s.get("trained_tokens_per_s"), 5)),
        ("tokens/s", _num(s.get("tokens_per_s"), 5)),
        ("train time (s)", _num(s.get("train_seconds"), 5)),
    ])]
    if s.get("stopped_early"):
        body.append('<p class="muted">Stopped early: the eval loss did not improve.</p>')
    series = {"train loss": [(m["step"], m["loss"]) for m in metrics]}
    if evals:
        series["eval loss"] = [(m["step"], m["eval_loss"]) for m in evals]
    body.append(section("Loss", line_chart(series), "loss"))
    body.append(section("Learning rate and speed",
                        line_chart({"learning rate": [(m["step"], m["lr"]) for m in metrics]})
                        + line_chart({"trained tokens/s": [(m["step"], m["trained_tokens_per_s"]) for m in metrics],
                                      "tokens/s": [(m["step"], m["tokens_per_s"]) for m in metrics]}), "speed"))
    rows = [[d.get("path"), d.get("spec", ""), d.get("weight"), d.get("rows"), d.get("used"),
             d.get("dropped_no_trained_tokens"), d.get("truncated"), d.get("skipped_lines"), d.get("tokens"),
             d.get("trained_tokens"), d.get("mean_length"), d.get("max_length")] for d in data.get("data", [])]
    headers = ["file", "spec", "weight", "rows", "used", "no trained tokens", "truncated", "broken lines skipped",
               "tokens", "trained tokens", "mean length", "max length"]
    inner = table(headers, rows, table_id="data-table")
    ev = data.get("eval_data")
    if ev:
        inner += table(["eval file", "rows", "used", "tokens", "trained tokens"],
                       [[ev.get("path"), ev.get("rows"), ev.get("used"), ev.get("tokens"), ev.get("trained_tokens")]],
                       table_id="evaldata-table")
    if data.get("added_tokens"):
        inner += f'<p>Special tokens added: {esc(", ".join(data["added_tokens"]))}</p>'
    body.append(section("Data", inner, "data"))
    settings = data.get("settings", {})
    setting_rows = [[key, _setting(value)] for key, value in settings.items()]
    body.append(section("Settings", table(["setting", "value"], setting_rows, table_id="settings-table", filterable=True),
                        "settings"))
    if metrics:
        keys = ["step", "epoch", "loss", "lr", "grad_norm", "tokens", "trained_tokens", "seconds", "trained_tokens_per_s"]
        body.append(section("Steps", table(keys, [[m.get(k) for k in keys] for m in metrics], table_id="steps-table"),
                            "steps"))
    subtitle = f"{s.get('model')} · {s.get('method')} · template {s.get('template')} · masking {s.get('masking')}"
    return page(result.title, subtitle, "".join(body))


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_setting(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"path", "weight"}:
            return f"{value['path']} (weight {value['weight']:g})"
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)
