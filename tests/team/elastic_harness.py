"""Two local torchrun "nodes" for the fault-tolerance tests: each node is a `hackathon run TASK
launcher=torchrun elastic.nnodes=1:2 elastic.rdzv_endpoint=127.0.0.1:PORT --run-dir RD` process in its own
session (so a whole node can be killed with its agent and workers), plus helpers to find and kill workers
and to read what the run recorded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER_MODULE = "hackathon.core.elastic_worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def elastic_overrides(port: int, nnodes: str = "1:2") -> list[str]:
    """Short rendezvous waits: the tests' nodes are local and start within seconds of each other."""
    return ["launcher=torchrun", f"elastic.nnodes={nnodes}", f"elastic.rdzv_endpoint=127.0.0.1:{port}",
            "elastic.max_restarts=3", "elastic.last_call_timeout=8", "elastic.join_timeout=180",
            "elastic.monitor_interval=0.5"]


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """kill -9 the node: the `hackathon run` process, its torchrun agent and its workers (torchrun
        starts each worker in a session of its own, so they are found through their parents)."""
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)


def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def start_node(task: str, run_dir: Path, overrides: list[str], env: dict, log: Path, spec: str | None = None) -> Node:
    exe = Path(sys.executable).parent / "hackathon"
    argv = [str(exe), "run", task, *overrides, "--run-dir", str(run_dir)] + (["--spec", spec] if spec else [])
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "wb")
    # Each simulated node gets one of the machine's cores, as a real node has its own: two workers with
    # torch's default of one thread per core each would fight over the same cores (train stage 513 s vs 60 s).
    node_env = {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=REPO, env=node_env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return Node(proc, log)


def start_two_nodes(task: str, run_dir: Path, overrides: list[str], env: dict, logs: Path,
                    extra_args: list[str] = ()) -> list[Node]:
    """Node 0 first, until it coordinates the run (its meta.json status appears), then node 1, which joins."""
    args = [*overrides, *extra_args]
    first = start_node(task, run_dir, args, env, logs / "node0.log")
    wait_until(lambda: (run_dir / "meta.json").exists() and meta(run_dir).get("status") in ("queued", "running"),
               120, "node 0 to coordinate", [first])
    return [first, start_node(task, run_dir, args, env, logs / "node1.log")]


def worker_pids(run_dir: Path) -> dict[int, int]:
    """{global rank: pid} of the live torchrun workers of this run (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if WORKER_MODULE.encode() not in cmd or str(run_dir).encode() not in cmd:
                continue
            env = dict(kv.split(b"=", 1) for kv in (entry / "environ").read_bytes().split(b"\0") if b"=" in kv)
            state = (entry / "stat").read_text().split()[2]
        except (OSError, ValueError):
            continue
        if state != "Z" and b"RANK" in env:
            found[int(env[b"RANK"])] = int(entry.name)
    return found


def wait_until(condition, timeout: float, what: str, nodes: list[Node] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for n in nodes:
            if n.proc.poll() is not None and n.proc.returncode != 0:
                raise AssertionError(f"a node ended with {n.proc.returncode} while waiting for {what}:\n"
                                     + n.output()[-4000:])
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                         + "\n---\n".join(n.output()[-3000:] for n in nodes))


def epochs_checkpointed(ckpt: Path) -> int:
    """Epochs done according to a checkpoint (Lightning last.ckpt or detect's last.pt); 0 if none yet."""
    import torch

    from hackathon.core.training import is_loadable_checkpoint

    if not is_loadable_checkpoint(ckpt):
        return 0
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # replaced while reading: the next poll sees the new file
        return 0
    return int(state["epoch"]) + 1


def meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "meta.json").read_text())


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def finish(nodes: list[Node], timeout: float) -> None:
    """Wait for every node to end; the test's last word is the run's meta.json."""
    deadline = time.monotonic() + timeout
    for n in nodes:
        try:
            n.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            out = "\n---\n".join(m.output()[-3000:] for m in nodes)
            cleanup(nodes)
            raise AssertionError("nodes did not finish in time:\n" + out)


def resumed_epochs(start: dict) -> int:
    """Epochs the fit of one elastic start resumed from (Lightning: resumed_from.epochs_done; detect:
    resumed_epoch)."""
    r = start.get("resumed_from")
    if isinstance(r, dict):
        return int(r.get("epochs_done") or 0)
    return int(start.get("resumed_epoch") or 0)


def cleanup(nodes: list[Node]) -> None:
    for n in nodes:
        if n.proc.poll() is None:
            n.kill()


def tiny_tts_corpus(root: Path) -> Path:
    """The TTS tests' 9-utterance espeak-ng corpus (train/val/test manifests) in `root`."""
    from data_tools.manifest import write_manifest
    from tests.tts.conftest import SPLIT_NAMES, TEMPLATE, espeak

    for split, names in SPLIT_NAMES.items():
        entries = [espeak(root / "wavs" / split / f"{i}.wav", TEMPLATE.format(greeting="您好", name=n))
                   for i, n in enumerate(names)]
        write_manifest(root / f"{split}_manifest.json", entries)
    return root
