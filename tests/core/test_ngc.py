"""NGC login: an unreachable registry fails cleanly, and the key is in no argv, file, log or output."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hackathon.core.errors import HackathonError
from hackathon.core.ngc import credential_state, read_api_key

KEY = "nvapi-TESTSECRET-0123456789abcdef"


def docker_shim(tmp_path: Path) -> Path:
    """A `docker` on PATH that records its argv and stdin size, then runs the real docker client."""
    real = subprocess.run(["bash", "-c", "command -v docker"], capture_output=True, text=True).stdout.strip()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "docker"
    shim.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" >> {tmp_path}/argv.log\nexec {real} "$@"\n')
    shim.chmod(0o755)
    return bindir


@pytest.mark.skipif(not subprocess.run(["bash", "-c", "command -v docker"]).returncode == 0,
                    reason="docker client not installed")
def test_login_to_unreachable_registry_fails_without_leaking_key(tmp_path, hackathon_bin):
    bindir = docker_shim(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", NGC_API_KEY=KEY, HOME=str(home),
               DOCKER_CONFIG=str(home / ".docker"), HACKATHON_RUNS=str(tmp_path / "runs"))
    # 127.0.0.1:9 (discard port, nothing listening) stands in for an unreachable nvcr.io.
    proc = subprocess.run([hackathon_bin, "ngc", "login", "--registry", "127.0.0.1:9"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "login 127.0.0.1:9 failed" in proc.stderr and "fix:" in proc.stderr
    argv = (tmp_path / "argv.log").read_text()
    assert "--password-stdin" in argv and KEY not in argv
    assert KEY not in proc.stdout + proc.stderr
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f"key leaked into {f}"


def test_key_file_must_be_private(tmp_path, monkeypatch):
    monkeypatch.delenv("NGC_API_KEY", raising=False)
    f = tmp_path / "ngc.key"
    f.write_text(KEY)
    f.chmod(0o644)
    with pytest.raises(HackathonError, match="readable by others") as err:
        read_api_key(f, prompt=False)
    assert "chmod 600" in err.value.fix
    f.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert read_api_key(f, prompt=False) == KEY
    with pytest.raises(HackathonError, match="No NGC API key"):
        read_api_key(None, prompt=False)


def test_status_names_the_config_file(tmp_path, monkeypatch):
    cfg = tmp_path / ".docker"
    cfg.mkdir()
    (cfg / "config.json").write_text('{"auths": {"nvcr.io": {"auth": "eA=="}}}')
    state = credential_state(cfg)
    assert state.has_credential and state.config_file == cfg / "config.json"
    assert not credential_state(tmp_path / "none").has_credential
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    from hackathon.core.ngc import status

    assert str(cfg / "config.json") in status() and "logged in" in status()
