"""Without a docker daemon `make test` still passes and says in one line what it skipped; CI=true makes it fail."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def _pytest_without_daemon(tmp_path, ci: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-daemon.sock", CI=ci)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/tao/test_runner_docker.py"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_docker_tests_skip_with_one_summary_line(tmp_path):
    proc = _pytest_without_daemon(tmp_path, ci="")
    assert proc.returncode == 0, proc.stdout[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("docker: ")]
    assert len(lines) == 1 and "docker-engine tests skipped" in lines[0] and "no docker engine reachable" in lines[0]
    count = int(lines[0].split()[1])
    assert count >= 1 and f"{count} skipped" in proc.stdout


def test_docker_tests_fail_under_ci(tmp_path):
    proc = _pytest_without_daemon(tmp_path, ci="true")
    assert proc.returncode != 0 and "CI=true but no docker engine is reachable" in proc.stdout
