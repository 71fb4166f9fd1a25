"""Session fixtures for the serving tests (tests/serve/*, the gate page test too).

`serve_runs`: REAL small runs of the three tasks (`hackathon run asr|detect|tts` with shrunk settings, in
a private runs root and demo-data cache). Training is slow: run these tests under the CPU lock,
`flock /tmp/hackathon-cpu.lock pytest tests/serve` (the fixture does not take it itself: that would
deadlock under the lock). HACKATHON_SERVE_TEST_RUNS="asr=DIR,tts=DIR,detect=DIR" uses existing finished
run dirs instead (e.g. `hackathon run all` output) to iterate quickly; nothing in them is modified.
The detect run is tests/conftest.py's `detect_tiny_run` (trained here; the Label Studio tests share it).

`triton_server`: `hackathon serve` on those runs as a subprocess on free loopback ports, ready; stopped
with SIGTERM at the end (the teardown asserts a clean exit and no stray tritonserver).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import pytest

from tests.tts.conftest import TINY_FASTPITCH  # one tiny FastPitch for the TTS and serving tests

REPO = Path(__file__).resolve().parents[2]

# Shrunk pipelines: enough to serve correct answers on the demo data, small enough for a 2-core CPU.
ASR_OVERRIDES = ["trainer.max_epochs=14", "data.demo.renditions=2"]
DETECT_OVERRIDES = ["demo.num_images=320", "trainer.max_epochs=5", "trainer.max_time=null"]  # steps, not wall-clock
TTS_OVERRIDES = [*TINY_FASTPITCH,  # the TTS tests' tiny FastPitch (tests/tts/conftest.py)
    "fastpitch.trainer.max_epochs=2",
    "fastpitch.trainer.max_time=null",
    "fastpitch.trainer.check_val_every_n_epoch=2",
    "hifigan.enabled=false",
    "vocoder=griffin_lim",
    "griffin_lim.n_iter=8",
    "synthesize.max_sentences=1",
    "evaluate.asr_overrides=[trainer.max_epochs=1,export.onnx=false,trainer.batch_size=4]",
]
OVERRIDES = {"asr": ASR_OVERRIDES, "detect": DETECT_OVERRIDES, "tts": TTS_OVERRIDES}


def hackathon_exe() -> str:
    return str(Path(sys.executable).parent / "hackathon")


def _env(base: Path | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if base is not None:
        env["HACKATHON_RUNS"] = str(base / "runs")
        env["HACKATHON_REGISTRY"] = str(base / "runs" / "registry.sqlite")
        env["HACKATHON_DEMO_DATA"] = str(base / "demo_data")
    return env


def tts_corpus(root: Path) -> Path:
    """The TTS pipeline test's 9-sentence espeak corpus (the serving tests only need audio at the rate)."""
    from data_tools.manifest import write_manifest
    from tests.tts.conftest import SPLIT_NAMES, TEMPLATE, espeak

    for split, names in SPLIT_NAMES.items():
        entries = [espeak(root / "wavs" / split / f"{i}.wav", TEMPLATE.format(greeting="您好", name=n))
                   for i, n in enumerate(names)]
        write_manifest(root / f"{split}_manifest.json", entries)
    return root


def given_runs() -> dict[str, Path]:
    given = os.environ.get("HACKATHON_SERVE_TEST_RUNS")
    return {task: Path(d) for task, d in (item.split("=", 1) for item in given.split(","))} if given else {}


def train_tiny(task: str, base: Path) -> Path:
    """`hackathon run TASK` with the shrunk settings into base/runs/TASK/tiny (or the given run)."""
    if task in given_runs():
        return given_runs()[task]
    extra = {"asr": [], "detect": [], "tts": [f"data.source={tts_corpus(base / 'tts_corpus')}"]}
    run_dir = base / "runs" / task / "tiny"
    log = base / f"{task}.log"
    with open(log, "w") as fh:
        proc = subprocess.run([hackathon_exe(), "run", task, "--run-dir", str(run_dir), *OVERRIDES[task], *extra[task]],
                              env=_env(base), stdout=fh, stderr=subprocess.STDOUT, timeout=1500)
    assert proc.returncode == 0, f"hackathon run {task} failed:\n{log.read_text()[-4000:]}"
    return run_dir


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory, detect_tiny_run) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("serve_runs")
    return {"asr": train_tiny("asr", base), "detect": detect_tiny_run, "tts": train_tiny("tts", base)}


def free_ports(n: int = 3) -> list[int]:
    """n distinct ports free now; another process may take one before the server binds it (on_free_ports)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def children(pid: int) -> list[int]:
    """Every descendant pid of `pid` (from /proc)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    ports: dict
    log: Path
    tritonserver_pids: list = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


T = TypeVar("T")
PORT_ATTEMPTS = 3


class PortTaken(AssertionError):
    """A server could not bind a port picked free: another process took it in between."""


def port_taken(output: str) -> bool:
    # tritonserver's bind error, and `hackathon serve`'s own up-front check (which quotes the OS's words)
    return "already in use" in output


def on_free_ports(start: Callable[[list[int]], T], n: int = 3) -> T:
    """start(ports) with n ports picked free, again with new ones (PORT_ATTEMPTS in all) when it raises PortTaken."""
    for attempt in range(PORT_ATTEMPTS):
        try:
            return start(free_ports(n))
        except PortTaken:
            if attempt == PORT_ATTEMPTS - 1:
                raise


def start_server(runs: dict[str, Path], log: Path, ports: dict | None = None, extra=()) -> ServerProcess:
    if ports:
        return _start_server_once(runs, log, ports, extra)
    return on_free_ports(lambda picked: _start_server_once(runs, log, dict(zip(("http", "grpc", "metrics"), picked)),
                                                           extra))


def _start_server_once(runs: dict[str, Path], log: Path, ports: dict, extra=()) -> ServerProcess:
    from hackathon.serve.server import wait_ready

    cmd = [hackathon_exe(), "serve", "--asr", str(runs["asr"]), "--tts", str(runs["tts"]), "--detect",
           str(runs["detect"]), "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
           "--metrics-port", str(ports["metrics"]), *extra]
    fh = open(log, "ab")
    proc = subprocess.Popen(cmd, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
    server = ServerProcess(proc, ports, log)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                wait_ready(server.http, timeout_s=2)
                break
            except Exception:  # noqa: BLE001 - still loading
                continue
        if proc.poll() is not None:
            tail = server.log_tail()
            error = PortTaken if port_taken(tail) else AssertionError
            raise error(f"hackathon serve exited with {proc.returncode}:\n{tail}")
        wait_ready(server.http, timeout_s=5)
    except BaseException:
        server.stop(signal.SIGKILL)
        raise
    server.tritonserver_pids = [p for p in children(proc.pid) if process_name(p) == "tritonserver"]
    return server


def assert_no_stray(server: ServerProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in server.tritonserver_pids):
        time.sleep(0.5)
    stray = [p for p in server.tritonserver_pids if alive(p)]
    assert not stray, f"tritonserver {stray} still running after serve stopped"


@pytest.fixture(scope="session")
def triton_server(serve_runs, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    server = start_server(serve_runs, log)
    assert server.tritonserver_pids, f"no tritonserver child of hackathon serve:\n{server.log_tail()}"
    yield server
    code = server.stop(signal.SIGTERM)
    assert code == 0, f"serve exited {code} on SIGTERM:\n{server.log_tail()}"
    assert_no_stray(server)
