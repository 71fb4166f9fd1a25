"""Label Studio's own venv and its server process.

Why its own venv: label-studio 1.23 pins Django 5.2, djangorestframework, pydantic, boto3, google-cloud-*,
openai, ... (~170 packages, 1 GB); installed into our .venv they would move versions NeMo / Lightning /
pytriton were tested with. So it lives in <data>/label-studio-venv (HACKATHON_LABEL_STUDIO_VENV), made on
first use from studio-constraints.txt (its `pip freeze`), and we talk to it over HTTP only.

The server: `label-studio start` on 127.0.0.1 (--host to change), its database and media under
<data>/label-studio (HACKATHON_LABEL_STUDIO_DIR), local files served from where they are
(LOCAL_FILES_DOCUMENT_ROOT=/; Label Studio serves a file only inside a project's local storage folder to a
user of that project). Started in its own process group, stopped as a group on exit/SIGTERM (and sent SIGTERM
by the kernel should we die by kill -9). The admin's
password and API token are made once into chmod-600 files there and passed through the environment,
never argv; nothing of ours deletes its database.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hackathon.core.atomic import atomic_write_json, atomic_write_text, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.logs import register_secret
from hackathon.core.paths import user_data_dir

LS_VERSION = "1.23.2"
CONSTRAINTS = Path(__file__).with_name("studio-constraints.txt")
READY_MARK = ".hackathon-ready"
DEFAULT_PORT = 8080
ADMIN_EMAIL = "admin@hackathon.local"
START_TIMEOUT_S = 900  # the first start migrates an empty SQLite database (minutes on 2 cores)
# Label Studio reads these names bare as well as LABEL_STUDIO_-prefixed: a stray HOST/PORT/PASSWORD in the
# user's shell must not reach it.
_KEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SSL_CERT_FILE")


def venv_dir() -> Path:
    return Path(os.environ.get("HACKATHON_LABEL_STUDIO_VENV", user_data_dir() / "label-studio-venv"))


def studio_dir() -> Path:
    return Path(os.environ.get("HACKATHON_LABEL_STUDIO_DIR", user_data_dir() / "label-studio"))


def venv_ready() -> bool:
    v = venv_dir()
    return (v / "bin" / "label-studio").exists() and (v / READY_MARK).exists() and (v / READY_MARK).read_text().strip() == LS_VERSION


def ensure_venv(echo=print) -> Path:
    """The label-studio executable of its own venv, made (pip from the registry) when missing."""
    v = venv_dir()
    if venv_ready():
        return v / "bin" / "label-studio"
    echo(f"making Label Studio {LS_VERSION}'s own venv in {v} (once; ~1 GB, a few minutes)")
    if v.exists() and not (v / "pyvenv.cfg").exists():
        raise HackathonError(f"{v} exists and is not a venv; not touching it.",
                             fix="Move it away, or set HACKATHON_LABEL_STUDIO_VENV to another folder.")
    base = getattr(sys, "_base_executable", None) or sys.executable
    steps = [[base, "-m", "venv", str(v)],
             [str(v / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), f"label-studio=={LS_VERSION}"]]
    for argv in steps:
        if subprocess.run(argv).returncode != 0:
            raise HackathonError(f"Could not make Label Studio's venv: `{' '.join(argv)}` failed.",
                                 fix="It needs the package registry (PyPI) once; see pip's message above, then run "
                                     "`hackathon label studio --setup` again.")
    atomic_write_text(v / READY_MARK, LS_VERSION + "\n")
    return v / "bin" / "label-studio"


def _secret_file(name: str, env: str, make) -> str:
    """A secret from env, else from <studio>/<name> (chmod 600, made once)."""
    value = os.environ.get(env)
    path = studio_dir() / name
    if not value and path.exists():
        if path.stat().st_mode & 0o077:
            raise HackathonError(f"{path} is readable by others.", fix=f"chmod 600 {path}")
        value = path.read_text().strip()
    if not value:
        value = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        os.replace(path.with_suffix(".tmp"), path)
    register_secret(value)
    return value


def admin() -> tuple[str, str, str]:
    """(email, password, API token) of the admin: LABEL_STUDIO_USERNAME / _PASSWORD / _USER_TOKEN, else
    admin@hackathon.local with a password and token made once into <studio>/admin-password, api-token."""
    email = os.environ.get("LABEL_STUDIO_USERNAME") or ADMIN_EMAIL
    password = _secret_file("admin-password", "LABEL_STUDIO_PASSWORD", lambda: secrets.token_urlsafe(12))
    token = _secret_file("api-token", "LABEL_STUDIO_USER_TOKEN", lambda: secrets.token_hex(20))
    return email, password, token


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """In the child: SIGTERM when our process dies, even by kill -9 (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


class Server:
    """One Label Studio process group; `url` is where its API answers."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT):
        self.host, self.port = host, int(port)
        self.url = f"http://{host}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = studio_dir() / "server.log"

    def start(self, echo=print) -> "Server":
        exe = ensure_venv(echo)
        if _port_taken(self.host, self.port):
            raise HackathonError(f"Port {self.port} on {self.host} is taken.", fix="Pass --port with a free port.")
        email, password, token = admin()
        data = studio_dir() / "data"
        data.mkdir(parents=True, exist_ok=True)
        env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
        env.update(LABEL_STUDIO_USERNAME=email, LABEL_STUDIO_PASSWORD=password, LABEL_STUDIO_USER_TOKEN=token,
                   LABEL_STUDIO_BASE_DATA_DIR=str(data), LOCAL_FILES_SERVING_ENABLED="true", LOCAL_FILES_DOCUMENT_ROOT="/",
                   LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true", LATEST_VERSION_CHECK="false",
                   COLLECT_ANALYTICS="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="", PYTHONUNBUFFERED="1")
        argv = [str(exe), "start", "--no-browser", "--internal-host", self.host, "--port", str(self.port),
                "--data-dir", str(data), "--enable-legacy-api-token"]
        echo(f"starting Label Studio {LS_VERSION} on {self.url} (log: {self.log_path})")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise HackathonError(f"Label Studio did not start:\n{tail}", fix=f"See {self.log_path}.")
            time.sleep(1)
        return self

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the whole group, SIGKILL after `timeout`; no child is left behind."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children that outlived the leader
        self.proc.wait()
        self.proc = None


def _lock():
    studio_dir().mkdir(parents=True, exist_ok=True)
    fh = open(studio_dir() / "server.lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def running_url() -> str | None:
    """URL of the team's server when one is up (started by `hackathon label studio`)."""
    info = read_json(studio_dir() / "server.json") or {}
    return info["url"] if info.get("url") and _healthy(info["url"]) else None


@contextlib.contextmanager
def connect(host: str = "127.0.0.1", port: int = DEFAULT_PORT, echo=print):
    """The running server's URL, or one started for this block (and stopped after it)."""
    url = running_url()
    if url:
        yield url
        return
    lock = _lock()
    if lock is None:
        raise HackathonError("Label Studio is starting or stopping (its lock is held).", fix="Try again in a minute.")
    server = Server(host, port)
    try:
        yield server.start(echo).url
    finally:
        server.stop()
        lock.close()


def serve_forever(host: str, port: int, on_ready, echo=print) -> None:
    """Run the team's server until Ctrl-C / SIGTERM; `on_ready(url)` sets up the projects first."""
    lock = _lock()
    if lock is None:
        raise HackathonError(f"Label Studio already runs for this data folder ({running_url() or 'starting'}).",
                             fix="Use that one; other `hackathon label studio --...` commands talk to it.")
    stop = []

    def on_signal(signum, _frame):
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = Server(host, port)
    try:
        server.start(echo)
        on_ready(server.url)
        atomic_write_json(studio_dir() / "server.json", {"url": server.url, "pid": os.getpid()})
        echo(f"Label Studio: {server.url}  (admin {admin()[0]}, password in {studio_dir() / 'admin-password'}; "
             "Ctrl-C stops)")
        while not stop:
            if server.proc.poll() is not None:
                raise HackathonError("Label Studio stopped on its own.", fix=f"See {server.log_path}.")
            time.sleep(0.5)
        echo(f"{signal.Signals(stop[0]).name}: stopping Label Studio")
    finally:
        (studio_dir() / "server.json").unlink(missing_ok=True)
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        lock.close()
        echo("Label Studio stopped")
