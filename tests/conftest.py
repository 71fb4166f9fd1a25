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


NO_ENGINE = "no docker engine reachable"


def require_docker_engine():
    """Skip without an engine — except under CI=true, where a missing engine is a failure."""
    try:
        import docker

        docker.from_env(timeout=10).ping()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no docker engine is reachable: {exc}")
        pytest.skip(f"{NO_ENGINE}: {exc}")


def pytest_terminal_summary(terminalreporter):
    """One line saying how many docker tests were skipped and why (a fresh machine has no daemon)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if isinstance(r.longrepr, tuple) and NO_ENGINE in str(r.longrepr[2])]
    if skipped:
        reason = str(skipped[0].longrepr[2]).removeprefix("Skipped: ")
        terminalreporter.write_line(
            f"docker: {len(skipped)} docker-engine tests skipped ({reason[:160]}); start the daemon "
            f"(sudo bash scripts/ensure_dockerd.sh) or run with CI=true to make them required.", yellow=True)


@pytest.fixture
def hackathon_bin() -> str:
    exe = Path(os.sys.executable).parent / "hackathon"
    return str(exe) if exe.exists() else shutil.which("hackathon")


@pytest.fixture(scope="session")
def detect_tiny_run(tmp_path_factory) -> Path:
    """The serving tests' small trained detector (tests/serve/conftest.py), shared with the Label Studio tests."""
    from tests.serve.conftest import train_tiny

    return train_tiny("detect", tmp_path_factory.mktemp("detect_tiny"))
