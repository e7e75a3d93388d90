"""bench/bench_train.py --quick: every contender trains (tiny-random model, warm processes driven
round robin), the table has a row for each, and the first-batch losses of a method agree."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_file

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["sftkit", "sftkit +gc", "TRL defaults", "TRL padding_free", "TRL padding_free +gc"]


@pytest.mark.slow
def test_quick_bench_has_every_contender_and_equal_losses(tmp_path):
    if importlib.util.find_spec("trl") is None:
        pytest.skip("trl is not installed: it is the optional 'bench' extra (pip install -e '.[bench]')")
    data = shared_file("code_alpaca_2k.json")
    report = tmp_path / "bench.json"
    env = {**os.environ, "SFTKIT_SHARED_DATA": str(data.parent), "SFTKIT_BENCH_JSON": str(report)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train.py"), "--quick", "--threads", "1"],
                          capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for method in ("full", "lora"):
        for label in LABELS:
            row = [line for line in lines if line[:26].rstrip() == f"{method} {label}"]
            assert len(row) == 1, f"no row for {method} {label} in:\n{proc.stdout}"
            assert float(row[0][26:].split()[0]) > 0  # trained tok/s
    assert "loss check: passed" in proc.stdout
    result = json.loads(report.read_text("utf-8"))
    assert result["loss_check"] is True
    assert len(result["canaries"]) == 4 and all(c > 0 for c in result["canaries"])
    rows = result["rows"]
    assert len(rows) == 10
    for method in ("full", "lora"):
        losses = [rows[name]["first_loss"] for name in rows if f"-{method}" in name]
        assert max(losses) - min(losses) < 1e-4, losses  # the same first batch, the same initial weights
        assert rows[f"sftkit-{method}"]["padding"] == 0.0
        assert rows[f"trl-{method}-defaults"]["padding"] > 0.0  # padded batches of rows of different lengths
        assert rows[f"trl-{method}-padfree"]["padding"] == 0.0
        for name in rows:
            if f"-{method}" in name:
                assert rows[name]["timed"] == 3
