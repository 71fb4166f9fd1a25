"""Team tests: each test gets its own runs root, registry and lock directory."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def team_env(tmp_path, monkeypatch):
    """Isolated HACKATHON_RUNS / HACKATHON_REGISTRY / HACKATHON_LOCK_DIR; returns the env for subprocesses."""
    monkeypatch.setenv("HACKATHON_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HACKATHON_REGISTRY", str(tmp_path / "registry.sqlite"))
    monkeypatch.setenv("HACKATHON_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("HACKATHON_LOCK_KEYS", raising=False)
    monkeypatch.setenv("HACKATHON_RUN_DIR", "")  # run_task exports it for DDP workers: undone after the test
    monkeypatch.delenv("HACKATHON_RUN_DIR")
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    return dict(os.environ)
