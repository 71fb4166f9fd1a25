"""Shared test fixtures: isolate runs/registry/locks/demo cache per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # Keep test artifacts out of the user's runs/ and shared registry.
    base = Path(os.environ.get("HACKATHON_TEST_TMP", "/tmp/hackathon-tests"))
    os.environ.setdefault("HACKATHON_RUNS", str(base / "runs"))
    os.environ.setdefault("HACKATHON_REGISTRY", str(base / "registry.sqlite"))
    os.environ.setdefault("HACKATHON_LOCK_DIR", str(base / "locks"))


def require_docker_engine():
    """Skip without an engine — except under CI=true, where a missing engine is a failure."""
    try:
        import docker

        docker.from_env(timeout=10).ping()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no docker engine is reachable: {exc}")
        pytest.skip(f"no docker engine reachable: {exc}")


@pytest.fixture
def hackathon_bin() -> str:
    exe = Path(os.sys.executable).parent / "hackathon"
    return str(exe) if exe.exists() else shutil.which("hackathon")
