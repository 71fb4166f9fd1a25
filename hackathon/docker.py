"""Shared docker-engine helper: connect with docker SDK 7 and turn engine failures into fixes.

Used by the doctor and by the TAO runner, so both say the same thing about the same problem.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hackathon.errors import HackathonError

SOCKET = Path("/var/run/docker.sock")

FIX_INSTALL = "sudo apt-get install -y docker.io   (Debian/Ubuntu; or Docker Engine from docs.docker.com)"
FIX_DAEMON = "sudo systemctl start docker   (no systemd: sudo dockerd &)"
FIX_PERMISSION = ("sudo usermod -aG docker $USER, then log out and in (or `newgrp docker`); "
                  "do not run the pipelines with sudo — results would be root-owned and the NGC login "
                  "would go to root's docker config")
FIX_NVIDIA = ("install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker "
              "&& sudo systemctl restart docker`; on a CPU-only machine use gpus=none")


def classify_engine_error(exc: BaseException) -> HackathonError:
    """Map a docker SDK / socket error to a HackathonError with the doctor's fix."""
    text = f"{type(exc).__name__}: {exc}"
    lowered = text.lower()
    if "permission denied" in lowered:
        return HackathonError(f"Permission denied on the docker socket ({_socket_path()}).", fix=FIX_PERMISSION)
    if any(w in lowered for w in ("no such file", "connection refused", "connection aborted", "filenotfound")):
        return HackathonError(f"The docker daemon is not running (cannot reach {_socket_path()}).", fix=FIX_DAEMON)
    return HackathonError(f"Docker engine error: {text}", fix="Run `hackathon doctor` for a diagnosis.")


def _socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.replace("unix://", "") if host else str(SOCKET)


def client(timeout: int = 120):
    """A connected docker SDK client, or a HackathonError with the fix."""
    try:
        import docker
    except ImportError:
        raise HackathonError("The docker Python SDK is not installed.", fix="pip install 'docker>=7,<8'")
    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
        return c
    except Exception as exc:  # DockerException wraps socket errors
        raise classify_engine_error(exc) from exc


def diagnose_engine() -> list[dict]:
    """Doctor checks: client, daemon reachable, socket permission, nvidia runtime (dicts: name/status/detail/fix)."""
    checks = []
    cli = shutil.which("docker")
    checks.append({"name": "docker client", "status": "ok" if cli else "fail",
                   "detail": cli or "docker CLI not found", "fix": "" if cli else FIX_INSTALL})
    sock = Path(_socket_path())
    if sock.exists() and not os.access(sock, os.R_OK | os.W_OK):
        checks.append({"name": "docker.sock permission", "status": "fail",
                       "detail": f"{sock} is not writable by uid {os.getuid()}", "fix": FIX_PERMISSION})
        return checks
    try:
        c = client(timeout=10)
    except HackathonError as exc:
        checks.append({"name": "docker daemon", "status": "fail", "detail": exc.message, "fix": exc.fix or ""})
        return checks
    info = c.info()
    checks.append({"name": "docker daemon", "status": "ok",
                   "detail": f"engine {info.get('ServerVersion')} reachable at {sock}", "fix": ""})
    checks.append({"name": "docker.sock permission", "status": "ok", "detail": f"{sock} usable by uid {os.getuid()}",
                   "fix": ""})
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    has_nvidia = "nvidia" in runtimes or bool(shutil.which("nvidia-container-runtime"))
    has_gpu = bool(shutil.which("nvidia-smi"))
    checks.append({"name": "nvidia container runtime",
                   "status": "ok" if has_nvidia else ("fail" if has_gpu else "warn"),
                   "detail": f"runtimes: {', '.join(runtimes) or 'none'}" + ("" if has_gpu else " (no GPU on this machine)"),
                   "fix": "" if has_nvidia else FIX_NVIDIA})
    return checks
