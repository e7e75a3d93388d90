"""Data-parallel training on CPU processes (torchrun, gloo): the loss and the weights do not depend
on the number of processes (one process with batch 8 = two with batch 4 each, to 1e-5), only the
main process writes, and a resume through accelerate's state (per-process RNG files) retraces the
run."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
TOL = 1e-5
STEPS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _args(out: Path, batch: int) -> list[str]:
    # 12 examples with answers of different lengths; 8 per step, so each process holds its own
    # number of trained tokens, split into passes of at most 200 tokens (several per process).
    return ["train", "--data", str(DATA / "qa.jsonl"), "--model", "tiny-random",
            "--max-steps", str(STEPS), "--batch-size", str(batch), "--lr", "5e-3", "--max-tokens-per-forward", "200",
            "--save-steps", "2", "--save-total-limit", "5", "--no-validate", "--output-dir", str(out)]


def _run(args: list[str], processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                str(_free_port())] if processes > 1 else []
    proc = subprocess.run([sys.executable, *launcher, "-m", "sftkit", *args], env=env, cwd=str(HERE.parent),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()]


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def _assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=TOL, atol=TOL)


def test_one_process_equals_two_and_resume_retraces(tmp_path):
    one, two, resumed = tmp_path / "one", tmp_path / "two", tmp_path / "resumed"
    _run(_args(one, 8), 1)
    proc = _run(_args(two, 4), 2)

    single, double = _metrics(one), _metrics(two)
    assert [m["step"] for m in double] == list(range(1, STEPS + 1))  # one metrics writer
    for a, b in zip(single, double):
        assert abs(a["loss"] - b["loss"]) <= TOL, (a["step"], a["loss"], b["loss"])
        assert a["trained_tokens"] == b["trained_tokens"] == sum(b["rank_trained_tokens"])
        assert len(b["rank_trained_tokens"]) == 2 and all(n > 0 for n in b["rank_trained_tokens"])
    # the processes hold different numbers of trained tokens, so a per-process mean would differ
    assert any(len(set(m["rank_trained_tokens"])) > 1 for m in double)
    assert double[-1]["epoch"] == 2.0  # 12 examples, 8 per step: every example seen twice
    _assert_same_weights(_adapter(one), _adapter(two))

    result = json.loads((two / "train.json").read_text("utf-8"))
    assert result["summary"]["processes"] == 2 and result["summary"]["replicas_in_sync"] is True
    models = sorted(p.relative_to(two).as_posix() for p in two.rglob("*.safetensors"))
    assert models == ["adapter_model.safetensors", "checkpoints/checkpoint-2/model.safetensors"]
    checkpoint = two / "checkpoints" / "checkpoint-2"
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert proc.stderr.count("done: 3 steps") == 1  # only the main process reports

    shutil.copytree(checkpoint, resumed / "checkpoints" / "checkpoint-2")
    shutil.copy(two / "metrics.jsonl", resumed / "metrics.jsonl")
    again = _run([*_args(resumed, 4), "--resume"], 2)
    assert "at step 2 of 3" in " ".join(again.stderr.split())
    assert abs(_metrics(resumed)[-1]["loss"] - double[-1]["loss"]) <= TOL
    _assert_same_weights(_adapter(resumed), _adapter(two))


def test_when_the_main_process_rejects_the_data_every_process_stops_with_its_message(tmp_path):
    """Only the main process validates; the other waits for it (gloo, long timeout) and, when
    validation fails, stops with the same message instead of hanging at a barrier."""
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    args = ["train", "--data", str(DATA / "sentiment_conflict.jsonl"), "--spec",
            str(HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"), "--model", "tiny-random",
            "--max-steps", "1", "--output-dir", str(tmp_path / "bad")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(_free_port()), "-m", "sftkit", *args], env=env, cwd=str(HERE.parent),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = " ".join(proc.stderr.split())
    assert "validation found 1 error(s); training did not start" in err  # the main process
    assert "the main process stopped:" in err  # the other one, with the main process's message
