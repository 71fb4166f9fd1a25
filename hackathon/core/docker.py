"""Shared docker-engine helper: connect with docker SDK 7 and turn engine failures into fixes.

Used by the doctor and by the TAO runner, so both say the same thing about the same problem.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hackathon.core.errors import HackathonError

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
    if is_missing_gpu_runtime(exc):
        return HackathonError(f"The docker engine cannot give GPUs to containers ({text}).", fix=FIX_NVIDIA)
    if "error setting rlimit" in lowered:
        return HackathonError(f"The docker engine refused a container ulimit ({text}).",
                              fix="Lower or remove that limit (tao.ulimits in the detect spec; memlock is rlimit type 8), "
                                  "or raise the engine's hard limit (dockerd --default-ulimit / LimitMEMLOCK=infinity).")
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
    has_gpu = bool(shutil.which("nvidia-smi"))
    try:
        c = client(timeout=10)
    except HackathonError as exc:
        checks.append({"name": "docker daemon", "status": "fail", "detail": exc.message, "fix": exc.fix or ""})
        # Same check list with or without a daemon: the runtime is judged from the toolkit binary alone.
        has_cli = bool(shutil.which("nvidia-container-runtime"))
        checks.append({"name": "nvidia container runtime",
                       "status": "warn" if has_cli or not has_gpu else "fail",
                       "detail": "unknown: the daemon is not reachable to list its runtimes"
                                 + (" (nvidia-container-runtime is installed)" if has_cli else ""),
                       "fix": f"start the daemon first ({FIX_DAEMON})" if has_cli else FIX_NVIDIA})
        return checks
    info = c.info()
    checks.append({"name": "docker daemon", "status": "ok",
                   "detail": f"engine {info.get('ServerVersion')} reachable at {sock}", "fix": ""})
    checks.append({"name": "docker.sock permission", "status": "ok", "detail": f"{sock} usable by uid {os.getuid()}",
                   "fix": ""})
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    has_nvidia = "nvidia" in runtimes or bool(shutil.which("nvidia-container-runtime"))
    checks.append({"name": "nvidia container runtime",
                   "status": "ok" if has_nvidia else ("fail" if has_gpu else "warn"),
                   "detail": f"runtimes: {', '.join(runtimes) or 'none'}" + ("" if has_gpu else " (no GPU on this machine)"),
                   "fix": "" if has_nvidia else FIX_NVIDIA})
    return checks


def is_missing_gpu_runtime(exc: BaseException) -> bool:
    """True for the engine's answers to `--gpus` when nvidia-container-toolkit is absent."""
    lowered = str(exc).lower()
    return any(w in lowered for w in ('could not select device driver', 'unknown runtime specified nvidia',
                                      'nvidia-container-cli', 'nvidia-container-runtime'))


def gpu_device_requests(gpus) -> list:
    """docker SDK device_requests for `gpus`: "all", indexes ("0,1", 0, [0, 1]) or "none"/None (CPU only)."""
    import docker

    if gpus is None or str(gpus).strip().lower() in ("none", "", "cpu", "false"):
        return []
    if str(gpus).strip().lower() == "all":
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    # OmegaConf turns gpus=0 into an int and gpus=[0,1] into a ListConfig; "0,1" stays a string.
    items = str(gpus).split(",") if isinstance(gpus, (str, int)) else list(gpus)
    ids = [str(i).strip() for i in items if str(i).strip()]
    bad = [i for i in ids if not i.isdigit()]
    if bad or not ids:
        raise HackathonError(f"gpus={gpus!r} is not 'all', 'none' or GPU indexes.",
                             fix="Write gpus=all, gpus=none, gpus=0 or gpus=0,1 (indexes as nvidia-smi lists them).")
    return [docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def image_present(c, image: str) -> bool:
    """True when the engine has `image` locally."""
    import docker

    try:
        c.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise classify_engine_error(exc) from exc


def ensure_image(c, image: str, echo=print) -> None:
    """Use the local image, else pull it with the credentials `hackathon ngc login` stored for docker.

    docker-py reads the same config.json (auths / credHelpers) as the docker CLI, so the key never
    passes through this process. Offline or unauthorised pulls become one clear error.
    """
    if image_present(c, image):
        return
    registry = image.split("/", 1)[0] if "/" in image and ("." in image.split("/", 1)[0] or ":" in image.split("/", 1)[0]) \
        else "docker.io"
    echo(f"image {image} is not on this machine: pulling it from {registry} (TAO images are 10-20 GB)")
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    try:
        c.images.pull(repo, tag=tag or "latest")
    except Exception as exc:
        text = str(exc)
        login_hint = ("run `hackathon ngc login` (NGC API key from ngc.nvidia.com > Setup) and retry"
                      if registry == "nvcr.io" else f"`docker login {registry}` if it is private")
        if any(w in text.lower() for w in ("unauthorized", "denied", "authentication required", "no basic auth")):
            raise HackathonError(f"Pulling {image} was refused by {registry}: {text}", fix=login_hint) from exc
        raise HackathonError(
            f"Cannot pull {image}: {registry} is unreachable or the image does not exist ({text}).",
            fix=f"Check the image name and the network; on an offline machine `docker save` the image elsewhere "
                f"and `docker load -i FILE` here. Credentials: {login_hint}.") from exc
