"""Resume and crash safety: a resumed run retraces the uninterrupted one (fp32 CPU, 1e-5), also
after SIGKILL during a step or during a checkpoint write."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
SPEC = HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"
STEPS = 8
TOL = 1e-5


def _args(out: Path) -> list[str]:
    return ["train", "--data", str(DATA / "sentiment.jsonl"), "--spec", str(SPEC), "--model", "tiny-random",
            "--max-steps", str(STEPS), "--batch-size", "4", "--lr", "5e-3", "--save-steps", "2",
            "--save-total-limit", "10", "--no-validate", "--output-dir", str(out)]


def _losses(out: Path) -> dict[int, float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()]
    steps = [m["step"] for m in lines if "loss" in m]
    assert len(steps) == len(set(steps)), f"duplicate metric lines: {steps}"
    return {m["step"]: m["loss"] for m in lines if "loss" in m}


def _adapter(out: Path):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def _assert_same_run(out: Path, ref: Path, from_step: int = 1) -> None:
    import torch

    got, want = _losses(out), _losses(ref)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in range(from_step, STEPS + 1):
        assert abs(got[step] - want[step]) <= TOL, (step, got[step], want[step])
    a, b = _adapter(out), _adapter(ref)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=TOL, atol=TOL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with a checkpoint every 2 steps."""
    from click.testing import CliRunner

    from sftkit.cli import cli

    out = tmp_path_factory.mktemp("reference") / "run"
    result = CliRunner().invoke(cli, _args(out), prog_name="sftkit")
    assert result.exit_code == 0, (result.output, result.exception)
    losses = _losses(out)
    assert losses[STEPS] < losses[1]
    return out


def test_resume_from_a_checkpoint_retraces_the_run(reference, tmp_path, run_cli):
    out = tmp_path / "resumed"
    shutil.copytree(reference / "checkpoints" / "checkpoint-4", out / "checkpoints" / "checkpoint-4")
    shutil.copy(reference / "metrics.jsonl", out / "metrics.jsonl")  # it holds steps past 4: they are dropped
    result = run_cli(*_args(out), "--resume")
    assert result.exit_code == 0, result.stderr
    assert "at step 4 of 8" in " ".join(result.stderr.split())
    _assert_same_run(out, reference)


def test_resume_from_a_named_checkpoint_with_the_saved_recipe(reference, tmp_path, run_cli):
    out = tmp_path / "named"
    shutil.copytree(reference / "checkpoints" / "checkpoint-2", out / "checkpoints" / "checkpoint-2")
    shutil.copytree(reference / "checkpoints" / "checkpoint-6", out / "checkpoints" / "checkpoint-6")
    shutil.copy(reference / "recipe.yaml", out / "recipe.yaml")
    # No data flags: the run folder's resolved recipe.yaml is used.
    result = run_cli("train", "--resume", out / "checkpoints" / "checkpoint-2")
    assert result.exit_code == 0, result.stderr
    losses, want = _losses(out), _losses(reference)
    assert sorted(losses) == list(range(3, STEPS + 1))
    assert all(abs(losses[s] - want[s]) <= TOL for s in losses)


def test_resume_without_checkpoint_is_a_usage_error(tmp_path, run_cli):
    result = run_cli(*_args(tmp_path / "none"), "--resume")
    assert result.exit_code == 2 and "no complete checkpoint" in " ".join(result.stderr.split())


def _start(out: Path, env_extra: dict) -> tuple[subprocess.Popen, Path]:
    log = out.parent / f"{out.name}.log"
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", **env_extra}
    handle = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "sftkit", *_args(out)], stdout=handle, stderr=subprocess.STDOUT,
                            env=env, cwd=str(HERE.parent))
    return proc, log


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}): {log.read_text()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"timed out; log: {log.read_text()[-2000:]}")


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_a_step_then_resume(reference, tmp_path, run_cli):
    out = tmp_path / "killed-step"
    proc, log = _start(out, {"SFTKIT_TEST_STEP_SLEEP": "0.4"})

    def past_checkpoint_4() -> bool:
        metrics = out / "metrics.jsonl"
        return metrics.exists() and '"step": 5,' in metrics.read_text("utf-8")

    _wait_for(past_checkpoint_4, proc, log)
    _kill(proc)
    assert not (out / "sftkit_run.json").exists()
    done = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert done[-1] in ("checkpoint-4", "checkpoint-6")
    result = run_cli(*_args(out), "--resume")
    assert result.exit_code == 0, result.stderr
    _assert_same_run(out, reference)


def test_sigkill_during_a_checkpoint_write_then_resume(reference, tmp_path, run_cli):
    from sftkit.train.checkpoints import latest_checkpoint

    out = tmp_path / "killed-write"
    proc, log = _start(out, {"SFTKIT_TEST_CHECKPOINT_SLEEP": "4:120"})
    _wait_for(lambda: "writing checkpoint-4" in log.read_text(), proc, log)
    _kill(proc)
    partial = [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-checkpoint-4")]
    assert len(partial) == 1 and (partial[0] / "model.safetensors").exists()
    assert not (out / "checkpoints" / "checkpoint-4").exists()
    assert latest_checkpoint(out / "checkpoints").name == "checkpoint-2"  # never the partial one
    result = run_cli(*_args(out), "--resume")
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert "removed 1 incomplete checkpoint" in err and "at step 2 of 8" in err
    assert not any(p.name.startswith(".tmp") for p in (out / "checkpoints").iterdir())
    _assert_same_run(out, reference)
