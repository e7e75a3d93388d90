"""--resume refuses a missing or damaged checkpoint with one message (exit 2), and
``--resume latest-valid`` falls back to the newest undamaged one, saying what it skipped."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
SPEC = HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"
STEPS = 5


def _args(out: Path) -> list[str]:
    return ["train", "--data", str(DATA / "sentiment.jsonl"), "--spec", str(SPEC), "--model", "tiny-random",
            "--max-steps", str(STEPS), "--batch-size", "4", "--lr", "5e-3", "--save-steps", "2",
            "--save-total-limit", "10", "--no-validate", "--output-dir", str(out)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A short run with checkpoint-2 and checkpoint-4."""
    from click.testing import CliRunner

    from sftkit.cli import cli

    out = tmp_path_factory.mktemp("checks") / "run"
    result = CliRunner().invoke(cli, _args(out), prog_name="sftkit")
    assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    return out


def _copy(reference: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference / "checkpoints", out / "checkpoints")
    shutil.copy(reference / "recipe.yaml", out / "recipe.yaml")
    return out


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _flip_last_byte(file: Path) -> None:
    """Same size, header intact: only the sha256 recorded at save time can tell."""
    data = bytearray(file.read_bytes())
    data[-1] ^= 0xFF
    file.write_bytes(bytes(data))


def _set_state(file: Path, **fields) -> None:
    state = json.loads(file.read_text("utf-8"))
    state.update(fields)
    file.write_text(json.dumps(state), "utf-8")


DAMAGES = {
    "weights truncated": ("model.safetensors", lambda f: _truncate(f)),
    "weights header garbled": ("model.safetensors", lambda f: f.write_bytes(b"\xff" * 64)),
    "weights missing": ("model.safetensors", lambda f: f.unlink()),
    "optimizer truncated": ("optimizer.bin", lambda f: _truncate(f)),
    "weights byte flipped": ("model.safetensors", lambda f: _flip_last_byte(f)),
    "state garbled": ("trainer_state.json", lambda f: f.write_text('{"format": 2, "step": ', "utf-8")),
    "step not a number": ("trainer_state.json", lambda f: _set_state(f, step="four")),
    "impossible step": ("trainer_state.json", lambda f: _set_state(f, step=99)),
}


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_newest_checkpoint_is_one_message_naming_the_file(reference, tmp_path, run_cli, damage):
    out = _copy(reference, tmp_path)
    name, spoil = DAMAGES[damage]
    spoil(out / "checkpoints" / "checkpoint-4" / name)
    result = run_cli("train", "--output-dir", out, "--resume")
    err = _flat(result.stderr)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "checkpoint-4" in err and name in err, err


@pytest.mark.parametrize("damage", ["weights truncated", "impossible step", "optimizer truncated", "weights byte flipped"])
def test_latest_valid_skips_the_damaged_checkpoint(reference, tmp_path, run_cli, damage):
    out = _copy(reference, tmp_path)
    name, spoil = DAMAGES[damage]
    spoil(out / "checkpoints" / "checkpoint-4" / name)
    result = run_cli("train", "--output-dir", out, "--resume", "latest-valid")
    err = _flat(result.stderr)
    assert result.exit_code == 0, result.stderr
    assert "skipped checkpoint-4" in err and name in err, err
    assert f"at step 2 of {STEPS}" in err, err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()
             if "loss" in json.loads(line)]
    assert steps == [3, 4, 5]


def test_latest_valid_with_no_valid_checkpoint(reference, tmp_path, run_cli):
    out = _copy(reference, tmp_path)
    for step in (2, 4):
        _truncate(out / "checkpoints" / f"checkpoint-{step}" / "model.safetensors")
    result = run_cli("train", "--output-dir", out, "--resume", "latest-valid")
    err = _flat(result.stderr)
    assert result.exit_code == 2, result.stderr
    assert "skipped checkpoint-4" in err and "skipped checkpoint-2" in err and "no valid checkpoint" in err, err


def test_a_missing_named_checkpoint_lists_those_that_exist(reference, tmp_path, run_cli):
    out = _copy(reference, tmp_path)
    missing = out / "checkpoints" / "checkpoint-3"
    result = run_cli("train", "--resume", missing)
    err = _flat(result.stderr)
    assert result.exit_code == 2, result.stderr
    assert "does not exist" in err and "checkpoint-3" in err, err
    assert "checkpoint-2, checkpoint-4" in err, err
    assert "no training data" not in err


def test_the_undamaged_checks_pass(reference):
    from sftkit.train.checkpoints import checkpoint_problem

    for step in (2, 4):
        assert checkpoint_problem(reference / "checkpoints" / f"checkpoint-{step}") is None


def test_the_state_records_a_sha256_of_each_file(reference):
    import hashlib

    folder = reference / "checkpoints" / "checkpoint-4"
    digests = json.loads((folder / "trainer_state.json").read_text("utf-8"))["sha256"]
    assert "model.safetensors" in digests and "optimizer.bin" in digests
    for name, want in digests.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == want
