"""`sftkit preview` and `sftkit plugins` through the CLI."""
from __future__ import annotations

import json

from conftest import FIXTURES, shared_file


def test_preview_shows_masking_on_real_data(run_cli, shared_data):
    path = shared_file("code_alpaca_2k.json")
    base = ["preview", path, "--template", "alpaca", "--model", "smollm2-135m", "-n", "2"]
    masked = json.loads(run_cli(*base, "--masking", "completion_only", "--format", "json").stdout)
    full = json.loads(run_cli(*base, "--masking", "full", "--format", "json").stdout)
    rows = json.loads(path.read_text("utf-8"))
    for shown, everything, row in zip(masked["examples"], full["examples"], rows):
        trained = "".join(t["text"] for t in shown["tokens"] if t["trained"])
        assert trained == row["output"] + "<|im_end|>"
        assert shown["masked"] > 0 and shown["trained"] + shown["masked"] == len(shown["tokens"])
        assert everything["masked"] == 0 and everything["trained"] == len(everything["tokens"])
    rich = run_cli(*base, "--masking", "completion_only")
    assert rich.exit_code == 0
    first = masked["examples"][0]
    assert f"row 0: {first['trained']} trained / {first['masked']} masked tokens" in rich.stdout
    assert "### Response:" in rich.stdout


def test_preview_plain_format_and_detection_note(run_cli):
    result = run_cli("preview", FIXTURES / "fixtures" / "alpaca_small.json", "--model", "tiny-random", "-n", "1",
                     "--format", "plain")
    assert result.exit_code == 0
    assert "detected format alpaca" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("== row 0:")
    assert [line.split()[0] for line in lines[1:]].count("T") > 0
    assert lines[-1].startswith('T ') and '"<|im_end|>"' in lines[-1]


def test_preview_rejects_unknown_component_and_option(run_cli):
    path = FIXTURES / "fixtures" / "alpaca_small.json"
    bad = run_cli("preview", path, "--template", "alpacca")
    assert bad.exit_code == 2 and "unknown template 'alpacca'" in bad.stderr and "did you mean 'alpaca'" in bad.stderr
    opt = run_cli("preview", path, "--masking", "full", "--masking-option", "prompt_weight=0.2")
    assert opt.exit_code == 2 and "has no option 'prompt_weight'" in opt.stderr


def test_preview_keeps_rich_markup_in_data_literal(run_cli, tmp_path):
    path = tmp_path / "markup.jsonl"
    path.write_text(json.dumps({"instruction": "[link=javascript:alert(1)]x[/link] and [/]", "output": "[bold]no[/]"}) + "\n")
    result = run_cli("preview", path, "--model", "tiny-random", "-n", "1")
    assert result.exit_code == 0
    flat = result.stdout.replace("\n", "")
    assert "[link=javascript:alert(1)]x[/link]" in flat and "[bold]no[/]" in flat


def test_plugins_json_lists_the_builtins(run_cli):
    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    kinds = {}
    for comp in data["components"]:
        kinds.setdefault(comp["kind"], set()).add(comp["name"])
    assert len(kinds["templates"]) >= 6 and len(kinds["masking_strategies"]) >= 5 and len(kinds["loaders"]) >= 5
    assert {"alpaca", "simple", "human_assistant", "chatml", "chat_template", "custom"} <= kinds["templates"]
    prompt_weighted = next(c for c in data["components"] if c["name"] == "prompt_weighted")
    assert prompt_weighted["options"] == {"prompt_weight": 0.1} and prompt_weighted["version"] == "built-in"
    assert all(p["ok"] for p in data["plugins"] if p["builtin"])
