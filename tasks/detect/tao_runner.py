"""Run one TAO command in its container (docker SDK 7) and tell the truth about the result.

The nvidia-tao launcher is not used: it exits 0 when the task failed, needs a tty, and pins an old
docker SDK. Here a job is: pre-flight (mounts + every path) -> image present (else pull with the NGC
login) -> container as the invoking uid:gid with the run's mounts, GPUs, shm and ulimits -> logs
streamed to the console and <run-dir>/logs/ -> exit code AND TAO's status.json AND the expected
artifacts checked. Ctrl-C, SIGTERM or the timeout stop and remove the container: no orphans.
"""

from __future__ import annotations

import glob
import json
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger, redact
from tasks.detect.tao_mounts import MountPlan, PathCheck, preflight, write_mounts_file

log = get_logger("hackathon.detect.tao")

LABEL = "hackathon.tao"  # every container we start carries it (tests and cleanup find them by it)
STATUS_FILE = "status.json"


@dataclass(frozen=True)
class StatusContract:
    """What one TAO 5 task writes to <results>/status.json (one JSON object a line), read from its source."""

    flag: str  # how the results dir is passed on the command line
    done: tuple[str, ...] = ("SUCCESS",)  # statuses that mean finished; () = none is written on success
    started: bool = True  # writes STARTED first (required when `done` is empty: proof this run wrote the file)
    truncates: bool = False  # opens status.json with append=False: read it from the start
    done_message: str | None = None  # a RUNNING line with this text also means finished
    source: str = ""


TF1 = "tao_tensorflow1_backend (TAO 5.0) nvidia_tao_tf1/cv/"
# (network, task) -> contract. FAILURE always fails the job, whatever the exit code (the tasks catch
# their exceptions and write FAILURE, and an interrupted task exits 0).
STATUS_CONTRACTS: dict[tuple[str, str], StatusContract] = {
    # ssd: STARTED only. Its SUCCESS write sits inside the `except Exception` branch after `raise e` /
    # `exit(1)`, so it never runs; success = no FAILURE + the TFRecord shards. StatusLogger(append=False).
    ("ssd", "dataset_convert"): StatusContract("-r", done=(), truncates=True,
                                               source=TF1 + "ssd/scripts/dataset_convert.py"),
    # yolo_v3: detectnet_v2's main() writes STARTED (append=False), the yolo_v3 wrapper SUCCESS after it.
    ("yolo_v3", "dataset_convert"): StatusContract("-r", truncates=True, source=TF1 + "yolo_v3/scripts/dataset_convert.py"
                                                   " + detectnet_v2/scripts/dataset_convert.py"),
    # -r required; STARTED from the Keras callback TAOStatusLogger.on_train_begin (common/callbacks/loggers.py),
    # RUNNING per epoch, SUCCESS at the end of run_experiment.
    ("ssd", "train"): StatusContract("-r", source=TF1 + "ssd/scripts/train.py"),
    # -r required; STARTED at the start of run_experiment, SUCCESS after model.train().
    ("yolo_v3", "train"): StatusContract("-r", source=TF1 + "yolo_v3/scripts/train.py"),
    # -r optional (ssd: else the model's folder; yolo_v3: else none); STARTED, SUCCESS with kpi {"mAP": ...}
    # (yolo_v3 writes SUCCESS twice: evaluate() and main()).
    ("ssd", "evaluate"): StatusContract("-r", source=TF1 + "ssd/scripts/evaluate.py"),
    ("yolo_v3", "evaluate"): StatusContract("-r", source=TF1 + "yolo_v3/scripts/evaluate.py"),
    ("ssd", "inference"): StatusContract("-r", source=TF1 + "ssd/scripts/inference.py"),
    ("yolo_v3", "inference"): StatusContract("-r", source=TF1 + "yolo_v3/scripts/inference.py"),
    # export: --results_dir only (common/export/app.py defines no -r); no STARTED, RUNNING "Building exporter
    # object." / "Exporting the model.", then SUCCESS from the network's scripts/export.py. (With
    # --results_dir /workspace/logs it writes status_export_<timestamp>.json instead; we never pass that.)
    ("ssd", "export"): StatusContract("--results_dir", started=False, source=TF1 + "ssd/scripts/export.py + common/export/app.py"),
    ("yolo_v3", "export"): StatusContract("--results_dir", started=False,
                                          source=TF1 + "yolo_v3/scripts/export.py + common/export/app.py"),
}
# gen_trt_engine runs in the deploy image (NVIDIA/tao_deploy nvidia_tao_deploy/cv/<net>/scripts/gen_trt_engine.py,
# decorator monitor_status in cv/common/decorators.py): -r/--results_dir; STARTED, then SUCCESS in 5.0
# (a285787) but RUNNING "Gen_trt_engine finished successfully." from 5.5 (21c66f2) on: accept either.
for _net in ("ssd", "yolo_v3"):
    STATUS_CONTRACTS[(_net, "gen_trt_engine")] = StatusContract(
        "--results_dir", done_message="finished successfully",
        source=f"tao_deploy nvidia_tao_deploy/cv/{_net}/scripts/gen_trt_engine.py + cv/common/decorators.py")
GENERIC = StatusContract("-r", source="any TAO task: STARTED ... SUCCESS")


def status_contract(network: str, task: str) -> StatusContract:
    return STATUS_CONTRACTS.get((network, task), GENERIC)


@dataclass
class TaoJob:
    """One `tao model <network> <task> ...` invocation, in container terms."""

    name: str  # e.g. "ssd train": shown in messages
    image: str
    command: list[str]  # argv inside the container
    plan: MountPlan
    checks: list[PathCheck]  # every spec path and command argument, checked before the container starts
    log_file: Path  # host file the container's output is appended to
    status_dir: Path | None = None  # host folder where TAO writes status.json (None: the task writes none)
    expected: list[Path] = field(default_factory=list)  # host paths/globs that must exist afterwards
    gpus: object = "all"
    timeout_s: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    mounts_file: Path | None = None  # where the per-run mounts file is written (TAO launcher format)
    launcher: str = "model"  # `tao model ...` (training image) or `tao deploy ...` (TensorRT image)
    status: StatusContract = GENERIC  # what the task writes to status.json (STATUS_CONTRACTS)


@dataclass
class JobResult:
    exit_code: int
    statuses: list[dict]
    seconds: float
    log_file: Path


def launcher_command(job: TaoJob) -> str:
    """The equivalent `tao model ssd train ...` line for people who prefer the launcher."""
    mounts = f"   # mounts: {job.mounts_file}" if job.mounts_file else ""
    return f"tao {job.launcher} " + " ".join(shlex.quote(a) for a in job.command) + mounts


# ------------------------------------------------------------------ status.json

def _status_file(status_dir: Path | None) -> Path | None:
    """<status_dir>/status.json when it exists."""
    p = status_dir / STATUS_FILE if status_dir is not None else None
    return p if p is not None and p.exists() else None


def status_offset(status_dir: Path | None, contract: StatusContract = GENERIC) -> int:
    """Most TAO tasks append to status.json: remember where this run's lines will start."""
    p = None if contract.truncates else _status_file(status_dir)
    return p.stat().st_size if p else 0


def _stat(status_dir: Path | None) -> tuple[int, int] | None:
    st = p.stat() if (p := _status_file(status_dir)) else None
    return (st.st_mtime_ns, st.st_size) if st else None


def read_statuses(status_dir: Path | None, offset: int) -> list[dict]:
    """The status.json lines (one JSON object each) written since `offset`."""
    p = _status_file(status_dir)
    if p is None:
        return []
    data = p.read_bytes()
    if len(data) < offset:  # the file was replaced: all of it is new
        offset = 0
    out = []
    for line in data[offset:].decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            out.append({"status": "UNPARSEABLE", "message": line[:200]})
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def finished(contract: StatusContract, statuses: list[dict]) -> bool:
    """Whether this run's status lines say the task finished (FAILURE is checked before this)."""
    names = [str(s.get("status", "")).upper() for s in statuses]
    if any(n in contract.done for n in names):
        return True
    if contract.done_message and any(n == "RUNNING" and contract.done_message in str(s.get("message", ""))
                                     for n, s in zip(names, statuses)):
        return True
    # a task that writes nothing on success: its STARTED line proves this run wrote the file
    return not contract.done and not contract.done_message and "STARTED" in names


def verdict(job: TaoJob, exit_code: int, statuses: list[dict], tail: str) -> None:
    """Raise unless the exit code, status.json and the expected artifacts all say success."""
    where = f"Log: {job.log_file}"
    if exit_code != 0:
        raise HackathonError(f"`{job.name}` failed: the container exited with code {exit_code}.\n{tail}",
                             fix=f"Read the error above. {where}")
    names = [str(s.get("status", "")).upper() for s in statuses]
    if "FAILURE" in names:
        msg = next((s.get("message") for s in reversed(statuses) if str(s.get("status")).upper() == "FAILURE"), "")
        raise HackathonError(
            f"`{job.name}` wrote status FAILURE to {job.status_dir / STATUS_FILE} although the container exited 0 "
            f"(the TAO launcher would have called this a success): {msg}\n{tail}",
            fix=f"Read the error above. {where}")
    if job.status_dir is not None and not finished(job.status, statuses):
        c = job.status
        wanted = " or ".join([*c.done, *([f'RUNNING "...{c.done_message}"'] if c.done_message else [])]) or "STARTED"
        raise HackathonError(
            f"`{job.name}` exited 0 but wrote no {wanted} to {job.status_dir / STATUS_FILE} "
            f"(statuses seen: {names or 'none'}; what this task writes: {c.source}).\n{tail}",
            fix=f"The task stopped before finishing; read the log. {where}")
    missing = [str(p) for p in job.expected if not glob.glob(str(p))]
    if missing:
        raise HackathonError(f"`{job.name}` reported success but did not write {', '.join(missing)}.\n{tail}",
                             fix=f"Read the log; check the spec's output settings. {where}")


# ------------------------------------------------------------------ the container

class _LogPump(threading.Thread):
    """Copies the container's output to the log file and the console while it runs."""

    def __init__(self, container, log_file: Path, echo: Callable[[str], None]):
        super().__init__(daemon=True)
        self.container, self.log_file, self.echo = container, log_file, echo
        self.tail: list[str] = []

    def run(self) -> None:
        buf = ""
        try:
            with open(self.log_file, "a", encoding="utf-8") as fh:
                for chunk in self.container.logs(stream=True, follow=True):
                    text = redact(chunk.decode("utf-8", "replace"))
                    fh.write(text)
                    fh.flush()
                    buf += text
                    *lines, buf = buf.replace("\r", "\n").split("\n")
                    for line in lines:
                        self._line(line)
                if buf:
                    self._line(buf)
        except Exception as exc:  # the container was removed under us (Ctrl-C): nothing more to copy
            log.debug("log stream ended: %s", exc)

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        self.tail = (self.tail + [line])[-25:]
        self.echo(f"  | {line}")


class _Terminated(Exception):
    pass


def _raise_terminated(signum, frame):  # SIGTERM (kill, systemd, CI cancel) cleans up like Ctrl-C
    raise _Terminated()


def _remove(container) -> None:
    """Stop and remove, surviving a second Ctrl-C: the container must not outlive us."""
    for _ in range(3):
        try:
            try:
                container.stop(timeout=5)
            except Exception:
                pass
            container.remove(force=True)
            return
        except KeyboardInterrupt:
            continue
        except Exception as exc:
            if "no such container" in str(exc).lower() or "404" in str(exc):
                return
            log.warning("could not remove container %s: %s", getattr(container, "short_id", "?"), exc)
            return


def _create(client, job: TaoJob):
    """Create (not start) the container, so a failing start still leaves a handle to remove it by."""
    import docker

    from hackathon.core.docker import classify_engine_error, gpu_device_requests

    opts = dict(
        image=job.image, command=job.command, volumes=job.plan.volumes(),
        environment=dict(job.plan.envs), user=job.plan.user, labels={LABEL: "1", **job.labels},
        device_requests=gpu_device_requests(job.gpus), init=True,
    )
    if job.plan.shm_size:
        opts["shm_size"] = job.plan.shm_size
    if job.plan.ulimits:
        opts["ulimits"] = job.plan.ulimit_objects()
    try:
        return client.containers.create(**opts)
    except docker.errors.ImageNotFound as exc:
        raise HackathonError(f"Image {job.image} is not on this machine.",
                             fix="Pull it (hackathon ngc login, then the run pulls it) or set image=...") from exc
    except docker.errors.APIError as exc:
        raise classify_engine_error(exc) from exc


def _start(container) -> None:
    import docker

    from hackathon.core.docker import classify_engine_error

    try:
        container.start()
    except docker.errors.APIError as exc:  # no GPU runtime, refused ulimit, ...: the caller removes it
        raise classify_engine_error(exc) from exc


def run_job(job: TaoJob, echo: Callable[[str], None] = print, client=None) -> JobResult:
    """Pre-flight, run, stream, check. Raises HackathonError on any failure; no container survives it."""
    from hackathon.core.docker import client as docker_client, ensure_image

    if job.mounts_file is not None:
        write_mounts_file(job.plan, job.mounts_file)
    preflight(job.plan, job.checks)  # before anything touches the engine
    client = client or docker_client()
    ensure_image(client, job.image, echo=echo)
    # The results dir is left for the container to create: made here it would belong to this process's
    # user, which is not the container user when DockerOptions.user says otherwise.
    offset = status_offset(job.status_dir, job.status)
    before = _stat(job.status_dir)
    job.log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log_file, "a", encoding="utf-8") as fh:
        fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.name}: {' '.join(job.command)}\n")
    echo(f"[tao] {job.name}: {launcher_command(job)}")
    log.info("starting %s in %s as %s: %s", job.name, job.image, job.plan.user, job.command)

    t0 = time.time()
    old_term = signal.signal(signal.SIGTERM, _raise_terminated) if threading.current_thread() is threading.main_thread() else None
    container = None
    try:
        container = _create(client, job)
        _start(container)
        pump = _LogPump(container, job.log_file, echo)
        pump.start()
        exit_code = _wait(container, job, t0)
        pump.join(timeout=10)
    except _Terminated:
        raise KeyboardInterrupt("terminated")
    finally:
        if container is not None:
            _remove(container)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    seconds = time.time() - t0
    # a task that rewrites status.json (truncates) but never got to it: the old file is not this run's
    stale = job.status.truncates and before is not None and _stat(job.status_dir) == before
    statuses = [] if stale else read_statuses(job.status_dir, offset)
    tail = "\n".join(f"  | {line}" for line in pump.tail[-12:])
    verdict(job, exit_code, statuses, tail)
    echo(f"[tao] {job.name}: ok in {seconds:.1f}s")
    return JobResult(exit_code, statuses, seconds, job.log_file)


def _wait(container, job: TaoJob, t0: float) -> int:
    """Poll (not a blocking wait) so Ctrl-C and the timeout are noticed within half a second."""
    while True:
        container.reload()
        if container.status in ("exited", "dead"):
            return int(container.attrs.get("State", {}).get("ExitCode", 1))
        if job.timeout_s is not None and time.time() - t0 > job.timeout_s:
            raise HackathonError(f"`{job.name}` ran longer than its limit of {job.timeout_s:.0f}s; the container was stopped and removed.",
                                 fix="Raise tao.timeout_s in the spec, or make the job smaller (num_epochs, images).")
        time.sleep(0.5)


def find_containers(client, labels: dict[str, str] | None = None) -> list:
    """Containers (running or not) started by this tool, optionally with extra matching labels."""
    filters = [f"{LABEL}=1"] + [f"{k}={v}" for k, v in (labels or {}).items()]
    return client.containers.list(all=True, filters={"label": filters})
