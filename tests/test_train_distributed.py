"""Data-parallel training: two CPU processes (gloo) both train, stay in sync, and one model is saved."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
QA = HERE / "data" / "train" / "qa.jsonl"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_train_and_save_one_model(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "sftkit", "train", "--data", str(QA), "--model", "tiny-random", "--max-steps", "3",
           "--batch-size", "2", "--save-steps", "2", "--output-dir", str(out), "--no-validate"]
    proc = subprocess.run(cmd, env=env, cwd=str(HERE.parent), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]  # one metrics writer
    for m in lines:
        assert len(m["rank_trained_tokens"]) == 2 and all(n > 0 for n in m["rank_trained_tokens"])
        assert m["trained_tokens"] == sum(m["rank_trained_tokens"])
    result = json.loads((out / "train.json").read_text("utf-8"))
    assert result["summary"]["processes"] == 2 and result["summary"]["replicas_in_sync"] is True
    # 12 examples, 2 per process and step: one epoch is 3 steps, and every example was seen once.
    assert lines[-1]["epoch"] == 1.0
    models = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.safetensors"))
    assert models == ["adapter_model.safetensors", "checkpoints/checkpoint-2/model.safetensors"]
    assert proc.stderr.count("done: 3 steps") == 1  # only the main process reports
