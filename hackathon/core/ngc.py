"""NGC (nvcr.io) login for the TAO images — through docker's own credential store.

The key comes from $NGC_API_KEY, a chmod-600 key file, or a hidden prompt. It is handed to
`docker login --password-stdin` on stdin, so it never appears in argv (visible in `ps`), and it is
registered with the log redactor so no log line, meta.json or report can carry it.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger, redact, register_secret

log = get_logger("hackathon.ngc")
NGC_USER = "$oauthtoken"  # NGC's fixed user name for API-key logins
LOGIN_TIMEOUT_S = 60


def read_api_key(key_file: Path | None = None, prompt: bool | None = None) -> str:
    """$NGC_API_KEY, else `key_file` (refused unless only the owner can read it), else a hidden prompt."""
    key = os.environ.get("NGC_API_KEY", "").strip()
    if not key and key_file is not None:
        key_file = Path(key_file).expanduser()
        if not key_file.is_file():
            raise HackathonError(f"NGC key file {key_file} does not exist.",
                                 fix="Save the key from ngc.nvidia.com (Setup > API Key) there, then chmod 600 it.")
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if mode & 0o077:
            raise HackathonError(f"NGC key file {key_file} is readable by others (mode {oct(mode)}).",
                                 fix=f"chmod 600 {key_file}")
        key = key_file.read_text(encoding="utf-8").strip()
    if not key and (prompt if prompt is not None else sys.stdin.isatty()):
        key = getpass.getpass("NGC API key (input hidden): ").strip()
    if not key:
        raise HackathonError("No NGC API key given.",
                             fix="export NGC_API_KEY=... (or --key-file FILE with mode 600, or run in a terminal to be prompted).")
    register_secret(key)
    return key


def docker_config_dir() -> Path:
    """The directory the docker CLI of *this* process will read: $DOCKER_CONFIG or $HOME/.docker."""
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env).expanduser() if env else Path.home() / ".docker"


def _docker_binary() -> str:
    docker = shutil.which("docker")
    if not docker:
        raise HackathonError("The docker client is not installed.",
                             fix="sudo apt-get install docker.io (or Docker Engine), then run `hackathon doctor`.")
    return docker


def login(key_file: Path | None = None, registry: str = "nvcr.io", prompt: bool | None = None) -> str:
    key = read_api_key(key_file, prompt)
    cfg_dir = docker_config_dir()
    try:
        proc = subprocess.run([_docker_binary(), "login", registry, "-u", NGC_USER, "--password-stdin"],
                              input=key + "\n", capture_output=True, text=True, timeout=LOGIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise HackathonError(f"docker login {registry} timed out after {LOGIN_TIMEOUT_S} s: the registry is unreachable.",
                             fix=f"Check the network/proxy to {registry} (offline machines cannot pull TAO images; "
                                 "copy them with `docker save`/`docker load` instead).")
    output = redact((proc.stdout + proc.stderr).strip())
    if proc.returncode != 0:
        unreachable = any(w in output.lower() for w in ("no such host", "connection refused", "timeout",
                                                         "network is unreachable", "dial tcp", "temporary failure"))
        fix = (f"{registry} cannot be reached from this machine: check the network/proxy, or load the TAO image "
               "from a file (`docker load -i tao.tar`)." if unreachable else
               "Check the key (ngc.nvidia.com > Setup > Generate API Key); the user name is always $oauthtoken.")
        log.error("docker login %s failed: %s", registry, output)
        raise HackathonError(f"docker login {registry} failed: {output}", fix=fix)
    log.info("logged in to %s; credential stored via %s", registry, cfg_dir / "config.json")
    return f"Logged in to {registry}. Docker stores the credential in {cfg_dir / 'config.json'} " \
           f"(or its credential helper). {_sudo_hint()}".strip()


def logout(registry: str = "nvcr.io") -> str:
    proc = subprocess.run([_docker_binary(), "logout", registry], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise HackathonError(f"docker logout {registry} failed: {proc.stderr.strip()}")
    return f"Logged out of {registry} ({docker_config_dir() / 'config.json'})."


@dataclass
class CredentialState:
    config_file: Path
    has_credential: bool
    via: str  # "auths", "credHelpers:<helper>", "credsStore:<store>" or ""


def credential_state(config_dir: Path, registry: str = "nvcr.io") -> CredentialState:
    cfg_file = config_dir / "config.json"
    try:
        data = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    except (OSError, json.JSONDecodeError):
        data = {}
    if registry in (data.get("credHelpers") or {}):
        return CredentialState(cfg_file, True, f"credHelpers:{data['credHelpers'][registry]}")
    auths = data.get("auths") or {}
    entry = next((v for k, v in auths.items() if k.rstrip("/").split("://")[-1] == registry), None)
    if entry is not None:
        via = f"credsStore:{data['credsStore']}" if data.get("credsStore") and not entry.get("auth") else "auths"
        return CredentialState(cfg_file, True, via)
    return CredentialState(cfg_file, False, "")


def _sudo_hint() -> str:
    if os.geteuid() == 0 and os.environ.get("SUDO_USER"):
        return (f"Note: you ran this with sudo, so the credential is in root's docker config; docker commands "
                f"run as {os.environ['SUDO_USER']} will not see it. Add {os.environ['SUDO_USER']} to the docker "
                "group and log in without sudo.")
    return ""


def other_config_dirs() -> list[Path]:
    """Docker configs a user may have logged in to by mistake (sudo vs. own user)."""
    dirs = []
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user:
        dirs.append(Path(os.path.expanduser(f"~{sudo_user}")) / ".docker")
    if os.geteuid() != 0:
        dirs.append(Path("/root/.docker"))
    return [d for d in dirs if d != docker_config_dir()]


def status(registry: str = "nvcr.io") -> str:
    state = credential_state(docker_config_dir(), registry)
    lines = []
    if state.has_credential:
        lines.append(f"{registry}: logged in — credential in {state.config_file} ({state.via}); "
                     "this is the file `docker pull` run as you will read.")
    else:
        lines.append(f"{registry}: NOT logged in — {state.config_file} has no credential for it.")
    for other in other_config_dirs():
        try:
            o = credential_state(other, registry)
        except PermissionError:
            continue
        if o.has_credential and not state.has_credential:
            lines.append(f"  but {o.config_file} has one: that config belongs to another user (sudo/root mismatch). "
                         "Run `hackathon ngc login` as the user who runs the pipelines.")
    hint = _sudo_hint()
    if hint:
        lines.append(hint)
    return "\n".join(lines)
