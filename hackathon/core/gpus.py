"""GPU locks: one run per GPU at a time, a FIFO queue for the others, released by the kernel on death.

Why flock: the kernel drops an flock when the last file descriptor holding it closes, which includes
the process being killed with -9 — so no stale lock is ever left behind by a crashed run, and no
"is the holder still alive?" guessing is needed.

Layout of the lock directory (HACKATHON_LOCK_DIR, default /tmp/hackathon-locks, group-writable):
    <key>.lock                  flock-ed by the run holding GPU <key>; its text = who holds it (JSON)
    <key>.queue/<ns>-<pid>.wait flock-ed by each run waiting for <key>; the oldest live waiter goes next

A key is "gpu<physical index>" for a real GPU. Any other name can stand in for one (HACKATHON_LOCK_KEYS
or the spec field `lock_keys`), which is how the tests lock "gpu0" on a CPU-only machine.
The directory is per machine: put it on local disk, not on a share used by several workstations.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger
from hackathon.core.paths import current_user

log = get_logger("hackathon.gpus")

DEFAULT_LOCK_DIR = "/tmp/hackathon-locks"
POLL_SECONDS = 0.5
DIR_MODE = 0o2775  # group-writable, setgid so files inherit the team's group
FILE_MODE = 0o664


def lock_dir() -> Path:
    return Path(os.environ.get("HACKATHON_LOCK_DIR", DEFAULT_LOCK_DIR))


def _ensure_dir(path: Path) -> Path:
    try:
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(PermissionError):
                os.chmod(path, DIR_MODE)
    except PermissionError:
        raise HackathonError(f"Cannot create the GPU lock directory {path}.",
                             fix="Set HACKATHON_LOCK_DIR to a local directory the whole team can write "
                                 "(mkdir -p DIR && chgrp TEAM DIR && chmod 2775 DIR).")
    return path


def _open_lock_file(path: Path) -> int:
    """Open (create) a lock file read-write without truncating it; group-writable."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except PermissionError:
        raise HackathonError(f"Cannot open the GPU lock file {path} (permission denied).",
                             fix=f"Ask its owner to run `chmod g+w {path}` and make sure you are in its group, "
                                 "or set HACKATHON_LOCK_DIR to a directory the whole team can write.")
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, FILE_MODE)  # umask would otherwise take the group's write bit away
    return fd


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _is_held(path: Path) -> bool:
    """True when some live process holds the flock on `path` (we probe with our own descriptor)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if _try_flock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def _read_holder(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (no holder details written yet)"
    since = holder.get("since", "?")
    run = holder.get("run_dir") or "-"
    return f"{holder.get('user', '?')} (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, run {run}) since {since}"


# ----------------------------------------------------------------------------- one key

@dataclass
class HeldLock:
    key: str
    fd: int
    path: Path

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # the next reader sees "free", not our stale details
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _QueueTicket:
    """This process's place in the FIFO queue of one key: a flock-ed file named by arrival time."""

    def __init__(self, key: str):
        self.queue_dir = _ensure_dir(lock_dir() / f"{key}.queue")
        with contextlib.suppress(PermissionError):
            os.chmod(self.queue_dir, DIR_MODE)
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}.wait"
        # Lock under a temporary name, then rename: nobody can see the ticket unlocked and take it for stale.
        tmp = self.queue_dir / f".{name}.tmp"
        self.fd = _open_lock_file(tmp)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.path = self.queue_dir / name
        os.replace(tmp, self.path)

    def is_first(self) -> bool:
        """True when no live ticket is older than ours; removes tickets left by dead processes."""
        for other in sorted(self.queue_dir.glob("*.wait")):
            if other == self.path:
                return True
            if _is_held(other):
                return False
            with contextlib.suppress(FileNotFoundError):
                other.unlink()  # its process died while waiting
        return True

    def leave(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _write_holder(fd: int, info: dict) -> None:
    data = (json.dumps(info) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def holder_info(run_dir: str | os.PathLike | None = None) -> dict:
    return {"user": current_user(), "pid": os.getpid(), "host": socket.gethostname(),
            "run_dir": str(run_dir) if run_dir else None, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _live_waiters(key: str) -> int:
    queue_dir = lock_dir() / f"{key}.queue"
    return sum(1 for p in queue_dir.glob("*.wait") if _is_held(p)) if queue_dir.is_dir() else 0


def acquire(key: str, run_dir: str | os.PathLike | None = None, wait: bool = True,
            echo: Callable[[str], None] = print, timeout: float | None = None) -> HeldLock:
    """Take the lock on `key`. wait=False: raise HackathonError at once if someone holds it (or is queued).
    wait=True: queue (first come, first served) and print who holds it, again whenever that changes."""
    path = _ensure_dir(lock_dir()) / f"{key}.lock"
    fd = _open_lock_file(path)
    ticket = _QueueTicket(key) if wait else None
    shown = None
    started = time.monotonic()
    try:
        while True:
            my_turn = ticket.is_first() if ticket is not None else _live_waiters(key) == 0
            if my_turn and _try_flock(fd):
                _write_holder(fd, holder_info(run_dir))
                log.info("GPU lock %s taken (%s)", key, path)
                return HeldLock(key, fd, path)
            holder = _read_holder(path) if _is_held(path) else {"queue": True}
            described = (describe_holder(holder) if "queue" not in holder
                         else "nobody, but earlier runs are queued for it")
            if not wait:
                raise HackathonError(f"GPU {key} is busy: held by {described}.",
                                     fix="Wait for that run (drop --no-wait to queue behind it), pick another GPU "
                                         "(trainer.devices=[N]), or see `hackathon gpus`.")
            if timeout is not None and time.monotonic() - started > timeout:
                raise HackathonError(f"Gave up waiting {timeout:.0f} s for GPU {key}, held by {described}.",
                                     fix="Try again later or see `hackathon gpus`.")
            if described != shown:
                echo(f"waiting for GPU {key}: held by {described}; queued (Ctrl-C to leave the queue)")
                shown = described
            time.sleep(POLL_SECONDS)
    except BaseException:
        os.close(fd)
        raise
    finally:
        if ticket is not None:
            ticket.leave()


@contextlib.contextmanager
def hold(keys: Sequence[str], run_dir: str | os.PathLike | None = None, wait: bool = True,
         echo: Callable[[str], None] = print) -> Iterator[list[HeldLock]]:
    """Hold every key for the duration of the block. Keys are taken in sorted order, so two runs that
    both need gpu0 and gpu1 can never each hold one and wait for the other."""
    held: list[HeldLock] = []
    try:
        for key in sorted(set(keys)):
            held.append(acquire(key, run_dir, wait=wait, echo=echo))
        yield held
    finally:
        for h in reversed(held):
            h.release()


# ----------------------------------------------------------------------------- which GPUs a run uses

def _listify_keys(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    return [str(k) for k in value]


def query_gpus() -> list[dict]:
    """nvidia-smi's view of the GPUs: index, uuid, name, memory used/total (MiB), utilization. [] without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return parse_nvidia_smi(out.stdout)


def parse_nvidia_smi(text: str) -> list[dict]:
    def number(s: str):
        try:
            return int(float(s))
        except ValueError:
            return None  # "[N/A]" on some boards

    gpus = []
    for line in text.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 6:
            continue
        gpus.append({"index": int(cols[0]), "uuid": cols[1], "name": cols[2], "memory_used_mib": number(cols[3]),
                     "memory_total_mib": number(cols[4]), "utilization_pct": number(cols[5])})
    return gpus


def visible_gpu_indices(gpus: list[dict]) -> list[int]:
    """Physical indices of the GPUs this process may use, in CUDA order (CUDA_VISIBLE_DEVICES maps them)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = [g["index"] for g in gpus]
    if env is None:
        return physical
    by_uuid = {g["uuid"]: g["index"] for g in gpus}
    visible = []
    for item in (x.strip() for x in env.split(",")):
        if item.isdigit() and int(item) in physical:
            visible.append(int(item))
        elif item.startswith("GPU-") or item.startswith("MIG-"):
            match = [i for u, i in by_uuid.items() if u.startswith(item)]
            if match:
                visible.append(match[0])
        else:
            break  # CUDA stops at the first invalid entry
    return visible


def _plain(node):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not OmegaConf.is_config(node):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:  # an interpolation the device fields don't need: read them as written
        return OmegaConf.to_container(node, resolve=False)


def _docker_request(gpus) -> tuple[str, Any]:
    """A container stage's GPU list (TAO's `gpus`): docker's physical GPU indexes."""
    if gpus is None or str(gpus).strip().lower() in ("none", "", "cpu", "false"):
        return ("cpu", 0)
    if str(gpus).strip().lower() == "all":
        return ("docker", "auto")
    items = str(gpus).split(",") if isinstance(gpus, (str, int)) else list(gpus)  # docker --gpus device=0,1
    return ("docker", [int(str(i).strip()) for i in items if str(i).strip()])


def requested_devices(cfg, stages) -> list[tuple[str, Any]]:
    """[(accelerator, devices)] the train stages of a run ask for, read where each stage says its
    settings live (Stage.trainer: accelerator/devices of that section; Stage.devices: a docker GPU list)."""
    from omegaconf import OmegaConf

    requests = []
    for stage in stages:
        if stage.kind != "train":
            continue
        if stage.devices:
            requests.append(_docker_request(_plain(OmegaConf.select(cfg, stage.devices))))
        else:
            section = _plain(OmegaConf.select(cfg, stage.trainer)) or {}
            requests.append((str(section.get("accelerator", "auto") or "auto").lower(), section.get("devices", "auto")))
    elastic = _plain(OmegaConf.select(cfg, "elastic")) if OmegaConf.select(cfg, "launcher") == "torchrun" else None
    nproc = str((elastic or {}).get("nproc_per_node", "auto"))
    if nproc.isdigit() and int(nproc) > 0:  # launcher=torchrun: one worker per local GPU
        requests.append(("auto", int(nproc)))
    return requests


def select_gpus(accelerator: str, devices: Any, visible: list[int]) -> list[int]:
    """Physical GPU indices a Lightning-style (accelerator, devices) request will use."""
    if accelerator == "cpu" or not visible:
        return []
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return list(visible)
        if "," in text:
            devices = [int(x) for x in text.split(",") if x.strip()]
        else:
            devices = int(text)  # Lightning reads "2" as a count
    if isinstance(devices, int):
        if devices == -1:
            return list(visible)
        if devices <= 0:
            return []
        return list(visible[:devices])
    if isinstance(devices, (list, tuple)):
        return [visible[int(i)] for i in devices if 0 <= int(i) < len(visible)]
    return []


def lock_keys_for(cfg, stages) -> list[str]:
    """The lock keys a run with this config and these stages needs: one per GPU, none for a CPU run.
    HACKATHON_LOCK_KEYS or the spec field `lock_keys` name them explicitly (stand-ins on a CPU box)."""
    from omegaconf import OmegaConf

    explicit = os.environ.get("HACKATHON_LOCK_KEYS")
    if explicit is None:
        explicit = OmegaConf.select(cfg, "lock_keys", default=None)
        if OmegaConf.is_config(explicit):
            explicit = OmegaConf.to_container(explicit)
    if explicit is not None:
        return _listify_keys(explicit)
    requests = [(acc, dev) for acc, dev in requested_devices(cfg, stages) if acc != "cpu"]
    if not requests:
        return []  # no nvidia-smi call for CPU runs
    table = query_gpus()
    visible = visible_gpu_indices(table)
    physical = [g["index"] for g in table]  # docker ignores CUDA_VISIBLE_DEVICES
    indices = set()
    for acc, dev in requests:
        if acc == "docker":
            indices.update(physical if dev == "auto" else [i for i in dev if i in physical])
        else:
            indices.update(select_gpus(acc, dev, visible))
    indices = sorted(indices)
    return [f"gpu{i}" for i in indices]


def is_lock_owner_process() -> bool:
    """Only the first process of a machine takes locks: DDP children (LOCAL_RANK>0) run under its lock."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0")


@contextlib.contextmanager
def run_device_locks(ctx, stages, wait: bool = True, echo: Callable[[str], None] = print) -> Iterator[list[str]]:
    """Hold the locks for every GPU the stages of run `ctx` use, around them; records them in meta.json."""
    keys = lock_keys_for(ctx.cfg, stages) if is_lock_owner_process() else []
    if not keys:
        yield []
        return
    with hold(keys, ctx.run_dir, wait=wait, echo=echo):
        ctx.meta["gpu_locks"] = list(keys)
        ctx.save_meta()
        yield keys


# ----------------------------------------------------------------------------- `hackathon gpus`

def lock_status(key: str) -> dict:
    base = lock_dir()
    path = base / f"{key}.lock"
    held = _is_held(path)
    holder = _read_holder(path) if held else {}
    return {"key": key, "held": held, "holder": holder or None, "waiting": _live_waiters(key)}


def gpu_table() -> list[dict]:
    """One row per GPU (nvidia-smi) plus one per stand-in lock key found in the lock directory."""
    rows = []
    known = set()
    for gpu in query_gpus():
        key = f"gpu{gpu['index']}"
        known.add(key)
        rows.append({**gpu, **lock_status(key)})
    base = lock_dir()
    if base.is_dir():
        for path in sorted(base.glob("*.lock")):
            if path.stem not in known:
                rows.append({"index": None, "name": "(lock key)", "memory_used_mib": None,
                             "memory_total_mib": None, **lock_status(path.stem)})
    return rows


def show_gpus(console, as_json: bool = False) -> list[dict]:
    """`hackathon gpus`: each GPU with its holder, run, since, queue length and memory used."""
    rows = gpu_table()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return rows
    from rich.table import Table

    if not rows:
        console.print(f"No GPU found (no nvidia-smi) and no locks in {lock_dir()}: CPU runs take no lock.")
        return rows
    table = Table(title=f"GPUs (locks in {lock_dir()})")
    for col in ("GPU", "name", "memory used", "holder", "run", "since", "waiting"):
        table.add_column(col)
    for r in rows:
        h = r["holder"] or {}
        mem = (f"{r['memory_used_mib']}/{r['memory_total_mib']} MiB" if r.get("memory_total_mib") is not None else "-")
        holder = f"{h.get('user', '?')} pid {h.get('pid', '?')}@{h.get('host', '?')}" if r["held"] else "free"
        table.add_row(r["key"], str(r.get("name") or "-"), mem, holder, str(h.get("run_dir") or "-"),
                      str(h.get("since") or "-"), str(r["waiting"]))
    console.print(table)
    return rows
