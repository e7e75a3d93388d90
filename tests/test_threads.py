"""The CPU thread choice: idle cores unless the user says otherwise."""
from __future__ import annotations

from sftkit.threads import choose_threads, idle_cores


def test_idle_cores_follow_the_load():
    assert idle_cores(2, 0.1) == 2
    assert idle_cores(2, 0.8) == 1
    assert idle_cores(2, 6.0) == 1  # never fewer than one
    assert idle_cores(16, 3.4) == 13
    assert idle_cores(4, -1.0) == 4  # never more than the cores


def test_the_user_decides_first(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SFTKIT_THREADS", "3")
    assert choose_threads() == (3, "SFTKIT_THREADS=3")
    monkeypatch.delenv("SFTKIT_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert choose_threads() == (1, "OMP_NUM_THREADS=1")
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    threads, why = choose_threads()
    assert threads >= 1 and "idle" in why
