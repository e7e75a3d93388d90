"""One prepared run: what `sftkit train` reads, renders and tokenizes, and what each command checks
before any work."""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
BAD = HERE / "data" / "bad"
SPEC = HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"


def _err(result) -> str:
    return " ".join(result.stderr.split())


def test_train_tokenizes_each_row_once_with_one_tokenizer(tmp_path, run_cli, monkeypatch):
    """Validation and training share the encodings: every training (and eval) text is tokenized
    exactly once, the prompts at most once more (the prefix check), by the one tokenizer loaded."""
    import sftkit.models

    loads, texts = [], []
    real_load = sftkit.models.load_tokenizer

    def counting_load(name, **kwargs):
        tokenizer = real_load(name, **kwargs)
        loads.append(name)
        parent = type(tokenizer)

        def call(self, text, *args, **kw):
            if kw.get("return_offsets_mapping"):  # a full training text, encoded with offsets
                texts.extend([text] if isinstance(text, str) else list(text))
            return parent.__call__(self, text, *args, **kw)

        tokenizer.__class__ = type("Counting" + parent.__name__, (parent,), {"__call__": call})
        return tokenizer

    monkeypatch.setattr(sftkit.models, "load_tokenizer", counting_load)
    monkeypatch.setenv("SFTKIT_DATA_CACHE", str(tmp_path / "encoded"))  # no encodings cached by other tests
    train_a, train_b, evals = DATA / "sentiment.jsonl", DATA / "qa.jsonl", DATA / "sentiment_eval.jsonl"
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(f"data:\n  - {{path: {train_a}, spec: {SPEC}}}\n  - {{path: {train_b}}}\n"
                      f"eval_data: {evals}\ntemplate: alpaca\nmodel: tiny-random\n", "utf-8")
    result = run_cli("train", recipe, "--max-steps", "2", "--output-dir", tmp_path / "run")
    assert result.exit_code == 0, result.stderr
    assert loads == ["tiny-random"]
    rows = sum(1 for path in (train_a, train_b, evals) for line in path.read_text("utf-8").splitlines() if line.strip())
    assert len(texts) == rows  # one encoding per row: validation's were reused for training
    train_json = json.loads((tmp_path / "run" / "train.json").read_text("utf-8"))
    assert train_json["validation"] and all(s["errors"] == 0 for s in train_json["validation"].values())


def test_train_eval_data_honours_skip_invalid(tmp_path, run_cli):
    broken = tmp_path / "eval.jsonl"
    good = [line for line in (DATA / "qa.jsonl").read_text("utf-8").splitlines() if line.strip()]
    broken.write_text(good[0] + "\n{not json\n" + good[1] + "\n", "utf-8")
    args = ["train", "--data", DATA / "qa.jsonl", "--eval-data", broken, "--model", "tiny-random",
            "--max-steps", "1", "--no-validate"]
    refused = run_cli(*args, "--output-dir", tmp_path / "a")
    assert refused.exit_code == 2 and f"{broken}, line 2" in _err(refused)
    result = run_cli(*args, "--skip-invalid", "--output-dir", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    assert f"{broken}, line 2: invalid JSON" in _err(result)
    train_json = json.loads((tmp_path / "b" / "train.json").read_text("utf-8"))
    assert train_json["eval_data"]["used"] == 2 and train_json["eval_data"]["skipped_lines"] == 1


def test_eval_rejects_a_bad_template_or_option_before_loading_a_model(run_cli):
    for extra, message in ((["--template", "alpacca"], "unknown template 'alpacca'"),
                           (["--template", "custom", "--template-option", "nope=1"], "has no option 'nope'")):
        result = run_cli("eval", "--model", "tiny-random", "--data", DATA / "qa.jsonl", *extra)
        assert result.exit_code == 2, result.stderr
        assert message in _err(result)
        assert "loading" not in result.stderr  # no model was loaded first


def test_validate_rejects_a_bad_validator_option_before_loading_the_tokenizer(run_cli, monkeypatch):
    import sftkit.models

    def no_tokenizer(*_args, **_kwargs):
        raise AssertionError("the tokenizer was loaded before the options were checked")

    monkeypatch.setattr(sftkit.models, "load_tokenizer", no_tokenizer)
    result = run_cli("validate", DATA / "qa.jsonl", "--validator-option", "quality.threshold=1")
    assert result.exit_code == 2 and "has no option 'threshold'" in _err(result)
