"""launcher=torchrun: the training stages of a run start under TorchElastic (torch.distributed.run).

`hackathon run asr launcher=torchrun trainer.devices=2 elastic.nnodes=1:2 elastic.rdzv_endpoint=ws1:29400
--run-dir /shared/runs/asr/exp7` on one or more machines:

- The first process to claim the run directory (an flock on `<run-dir>/elastic/coordinator.lock`) is the
  run's coordinator: it runs the pipeline as usual (prepare, evaluate, export, meta.json, registry,
  report) and, for each train stage on the one engine (`Stage.on_engine`), starts a local torchrun
  agent (c10d rendezvous, --nnodes MIN:MAX, --max-restarts) whose workers run just that stage
  (hackathon/core/elastic_worker.py). It waits for the agent, then marks the stage done and goes on.
- Every further process with the same command and run dir (another machine, or a second agent on this
  one) is a joiner: it waits until the coordinator is inside a training stage and starts its own agent
  for that stage with the same rendezvous (no node rank needed: c10d assigns one); it follows the
  coordinator through all training stages and leaves when the run ends.
- torchrun restarts the whole worker group when a worker dies (up to max_restarts) and when a node joins
  or leaves (elastic: between MIN and MAX nodes). Every start of the workers resumes from the stage's
  last checkpoint; the worker with global rank 0 records each start (restart count, world size, what it
  resumed from) in the stage's meta.json entry under `elastic`.

Nothing here schedules anything: torchrun does the restarts and the rendezvous; Kubernetes
(Kubeflow PyTorchJob, hackathon/cluster/k8s.py) or SLURM (hackathon/cluster/slurm.py) start the nodes.
"""

from __future__ import annotations

import dataclasses

import fcntl
import hashlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from hackathon.core.atomic import atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger
from hackathon.core.run_context import (RunContext, Stage, WorkerContext, config_hash, find_resumable_run, pipeline_module,
                                   wait_for_running_stage)

log = get_logger("hackathon.elastic")

LAUNCHERS = ("local", "torchrun")
ELASTIC_DIR = "elastic"  # under the run dir: coordinator lock, one launch file per training stage
WORKER_MODULE = "hackathon.core.elastic_worker"
POLL_SECONDS = 0.5
JOIN_WAIT_SECONDS = 3600.0  # a joiner may start long before the coordinator reaches training


def launcher(cfg) -> str:
    from omegaconf import OmegaConf

    name = str(OmegaConf.select(cfg, "launcher", default="local") or "local")
    if name not in LAUNCHERS:
        raise HackathonError(f"launcher={name!r} is not known.", fix="Use launcher=local or launcher=torchrun.")
    return name


# ----------------------------------------------------------------------------- settings -> torchrun argv

@dataclass
class ElasticSettings:
    nnodes: str  # "N" or "MIN:MAX"
    nproc_per_node: str  # "auto" or a number
    max_restarts: int
    rdzv_endpoint: str | None
    rdzv_id: str | None
    node_rank: int | None
    join_timeout: int
    last_call_timeout: int
    monitor_interval: float

    @property
    def max_nodes(self) -> int:
        return int(self.nnodes.split(":")[-1])


def settings(cfg) -> ElasticSettings:
    from omegaconf import OmegaConf

    e = OmegaConf.select(cfg, "elastic", default=None)
    if e is None:
        raise HackathonError("launcher=torchrun needs an `elastic:` section in the spec.",
                             fix="Copy the elastic: block of specs/asr/demo.yaml into your spec.")
    nnodes = str(e.get("nnodes", "1")).replace(" ", "")
    parts = nnodes.split(":")
    if not (1 <= len(parts) <= 2 and all(p.isdigit() and int(p) > 0 for p in parts)
            and int(parts[0]) <= int(parts[-1])):
        raise HackathonError(f"elastic.nnodes={nnodes!r} is not N or MIN:MAX.",
                             fix="Write elastic.nnodes=2 (fixed) or elastic.nnodes=1:4 (elastic, 1 to 4 nodes).")
    s = ElasticSettings(nnodes=nnodes, nproc_per_node=str(e.get("nproc_per_node", "auto")),
                        max_restarts=int(e.get("max_restarts", 3)), rdzv_endpoint=e.get("rdzv_endpoint"),
                        rdzv_id=e.get("rdzv_id"), node_rank=e.get("node_rank"),
                        join_timeout=int(e.get("join_timeout", 600)),
                        last_call_timeout=int(e.get("last_call_timeout", 30)),
                        monitor_interval=float(e.get("monitor_interval", 1)))
    if s.nproc_per_node != "auto" and not s.nproc_per_node.isdigit():
        raise HackathonError(f"elastic.nproc_per_node={s.nproc_per_node!r} is not a number.",
                             fix="Use elastic.nproc_per_node=auto (the trainer's devices) or a count such as 4.")
    if not s.rdzv_endpoint and s.max_nodes > 1:
        raise HackathonError(f"elastic.nnodes={nnodes} needs elastic.rdzv_endpoint=HOST:PORT.",
                             fix="Give every node the address of one of them, e.g. elastic.rdzv_endpoint=ws1:29400.")
    return s


def nproc_per_node(stage: Stage, cfg, s: ElasticSettings) -> int:
    """Workers per node: elastic.nproc_per_node, or (auto) the stage's trainer devices when a number,
    else the visible GPUs (1 on CPU)."""
    from omegaconf import OmegaConf

    if s.nproc_per_node != "auto":
        return int(s.nproc_per_node)
    for key in stage.config_keys:
        node = OmegaConf.select(cfg, key)
        trainer = node if key == "trainer" else (node.get("trainer") if OmegaConf.is_dict(node) else None)
        devices = trainer.get("devices") if OmegaConf.is_dict(trainer) else None
        if isinstance(devices, int) and devices > 0:
            return devices
        if isinstance(devices, str) and devices.isdigit():
            return int(devices)
    import torch

    return max(1, torch.cuda.device_count())


def _free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rendezvous_id(run_dir: Path, s: ElasticSettings) -> str:
    """Every node of one run meets under the same id: derived from the run dir unless given."""
    return str(s.rdzv_id) if s.rdzv_id else "hackathon-" + hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]


def torchrun_argv(task: str, run_dir: Path, stage_name: str, nproc: int, s: ElasticSettings,
                  endpoint: str, log_dir: Path) -> list[str]:
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={s.nnodes}", f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rendezvous_id(run_dir, s)}",
            f"--rdzv-conf=join_timeout={s.join_timeout},last_call_timeout={s.last_call_timeout}",
            f"--max-restarts={s.max_restarts}", f"--monitor-interval={s.monitor_interval:g}",
            f"--log-dir={log_dir}", "--redirects=3"]
    if s.node_rank is not None:
        argv.append(f"--node-rank={int(s.node_rank)}")
    return argv + ["--module", WORKER_MODULE, task, str(run_dir), stage_name]


def launch_file(run_dir: Path, stage_name: str) -> Path:
    return run_dir / ELASTIC_DIR / f"{stage_name}.launch.json"


def _agent_env() -> dict:
    env = dict(os.environ)
    # torch's agents share one TCPStore across rounds and build its address only at their first rendezvous:
    # a node joining later waits for a MASTER_ADDR that the running nodes never publish for the new round
    # (DistStoreError "wait timeout ... MASTER_ADDR"), so scale-up failed. The opt-out rebuilds it every round.
    env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    repo = str(Path(__file__).resolve().parents[2])  # workers import hackathon/tasks from this checkout
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_agent(task: str, run_dir: Path, stage: Stage, cfg, endpoint: str | None = None,
              echo: Callable[[str], None] = print) -> int:
    """Start one torchrun agent on this machine for `stage` and wait for it. Returns its exit code."""
    s = settings(cfg)
    endpoint = endpoint or s.rdzv_endpoint
    nproc = nproc_per_node(stage, cfg, s)
    tag = f"{socket.gethostname()}-{os.getpid()}"
    log_dir = run_dir / "logs" / ELASTIC_DIR / stage.name / tag
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = torchrun_argv(task, run_dir, stage.name, nproc, s, endpoint, log_dir)
    agent_log = log_dir / "agent.log"
    echo(f"torchrun {stage.name}: nnodes {s.nnodes}, {nproc} worker(s) here, rendezvous {endpoint}, "
         f"max restarts {s.max_restarts} (log: {agent_log})")
    log.info("torchrun agent: %s", " ".join(argv))
    with open(agent_log, "ab") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=_agent_env(), cwd=run_dir).returncode


# ----------------------------------------------------------------------------- coordinator / joiner

@dataclass
class Role:
    """Which part this process plays in a launcher=torchrun run."""

    run_dir: Path
    coordinator: bool
    lock_fd: int | None = None

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor drops the flock
            self.lock_fd = None


def claim_role(task: str, overrides: Sequence[str], spec: str | None, run_dir, new: bool) -> Role | None:
    """None for launcher=local. Otherwise: coordinator if this process gets the run dir's coordinator
    lock (held until release() or the process ends, kill -9 included), else joiner."""
    from hackathon.core.config import load_config
    from hackathon.core.paths import default_run_dir

    cfg = load_config(task, spec, overrides)
    if launcher(cfg) != "torchrun":
        return None
    settings(cfg)  # refuse bad elastic.* before anything starts
    if run_dir is not None:
        rd = Path(run_dir)
    else:
        rd = (None if new else find_resumable_run(task, config_hash(cfg))) or default_run_dir(task)
    rd = rd.resolve()
    (rd / ELASTIC_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(rd / ELASTIC_DIR / "coordinator.lock", os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return Role(run_dir=rd, coordinator=False)
    return Role(run_dir=rd, coordinator=True, lock_fd=fd)


def under_torchrun(ctx: RunContext, stages: list[Stage], echo: Callable[[str], None] = print) -> list[Stage]:
    """The coordinator's stage list: training stages replaced by 'start an agent for it and wait'."""
    return [dataclasses.replace(st, fn=_coordinated(st, echo)) if st.on_engine
            else st for st in stages]


def _coordinated(stage: Stage, echo: Callable[[str], None]):
    def run(ctx: RunContext) -> None:
        s = settings(ctx.cfg)
        endpoint = s.rdzv_endpoint or f"127.0.0.1:{_free_local_port()}"  # one node: a private rendezvous
        entry = ctx.meta["stages"][stage.name]
        info = entry.setdefault("elastic", {"starts": []})
        info.update({"launcher": "torchrun", "nnodes": s.nnodes, "max_restarts": s.max_restarts,
                     "rdzv_endpoint": endpoint, "rdzv_id": rendezvous_id(ctx.run_dir, s),
                     "launches": info.get("launches", 0) + 1})
        ctx.save_meta()
        # The workers start fresh only if the runner says so and nothing was checkpointed since this file
        # was written (a restart within this launch must resume, not move its own checkpoints aside).
        atomic_write_json(launch_file(ctx.run_dir, stage.name),
                          {"fresh": not ctx.resuming, "launch": info["launches"], "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        rc = run_agent(ctx.task, ctx.run_dir, stage, ctx.cfg, endpoint, echo)
        # Rank 0 wrote its records into meta.json meanwhile: take them over in place (the runner holds
        # a reference to this stage's entry).
        on_disk = (read_json(ctx.run_dir / "meta.json", default={}) or {}).get("stages", {}).get(stage.name, {})
        entry.update({k: v for k, v in on_disk.items() if k not in ("status", "start", "attempts", "resumed")})
        info = entry.get("elastic", {})
        echo(f"torchrun {stage.name}: exit code {rc}, {info.get('restarts', 0)} restart(s), "
             f"world sizes {info.get('world_sizes', [])}")
        if rc != 0:
            raise HackathonError(
                f"The {stage.name} stage failed under torchrun (exit code {rc}, "
                f"{info.get('restarts', 0)} restarts of max {s.max_restarts}).",
                fix=f"See {ctx.run_dir}/logs/{ELASTIC_DIR}/{stage.name}/ (agent.log and each worker's stderr), "
                    "fix the cause and type the same command again: the stage resumes from its last checkpoint.")
    return run


def _wait_for_rendezvous_host(endpoint: str | None, seconds: float = 20.0) -> None:
    """Give the coordinator's agent a moment to open the rendezvous: when several agents share the
    endpoint's machine, the first to bind the port hosts the c10d store, and that should be the
    coordinator's (a joiner may be stopped any time). Goes on after `seconds` regardless: on a cluster the
    endpoint's machine may well be a joiner."""
    if not endpoint or ":" not in endpoint:
        return
    host, port = endpoint.rsplit(":", 1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(POLL_SECONDS)


def join_run(task: str, role: Role, overrides: Sequence[str] = (), spec: str | None = None,
             echo: Callable[[str], None] = print, pipeline: Callable = pipeline_module,
             timeout: float = JOIN_WAIT_SECONDS) -> RunContext:
    """A joiner: start a local agent for each training stage the coordinator runs, until the run ends."""
    from hackathon.core import gpus
    from hackathon.core.config import load_config

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    cfg = load_config(task, spec, overrides)
    rd = role.run_dir
    all_stages = pipeline(task).build_stages(cfg)
    stages = {st.name: st for st in all_stages if st.on_engine}
    echo(f"joining the run in {rd} (another process coordinates it): waiting for its training stages")
    ctx = WorkerContext(task=task, run_dir=rd, cfg=cfg, meta={})
    joined: set[tuple[str, int]] = set()
    def attempt(name: str, entry: dict) -> tuple[str, int]:  # a stage started again is joined again
        return name, int(entry.get("attempts", 0))

    def not_joined_yet(name: str, entry: dict) -> bool:  # a training stage (attempt) with its launch file written
        return name in stages and attempt(name, entry) not in joined and launch_file(rd, name).exists()

    fix = "Start the same command with the same --run-dir on the first node too."
    while (found := wait_for_running_stage(rd, not_joined_yet, started, timeout, fix, POLL_SECONDS)) is not None:
        name, meta = found
        current = attempt(name, meta["stages"][name])
        endpoint = (meta["stages"][name].get("elastic") or {}).get("rdzv_endpoint")
        _wait_for_rendezvous_host(endpoint)
        ctx = WorkerContext(task=task, run_dir=rd, cfg=cfg, meta=meta, stage=name)
        with gpus.run_device_locks(ctx, all_stages, echo=echo):  # this machine's GPUs, while its agent trains
            rc = run_agent(task, rd, stages[name], cfg, endpoint, echo)
        if rc != 0:
            raise HackathonError(f"This node's torchrun agent for stage {name} ended with exit code {rc}.",
                                 fix=f"See {rd}/logs/{ELASTIC_DIR}/{name}/; the run goes on on the other nodes "
                                     "while at least elastic.nnodes' minimum is up; start this command again to rejoin.")
        joined.add(current)
    echo(f"the run in {rd} has ended: leaving")
    return ctx


# ----------------------------------------------------------------------------- shared by the trainers

def weights_digest_by_rank(module) -> list[str] | None:
    """sha256 of `module`'s parameters and buffers on every rank (gathered to all), or None outside a
    process group of more than one: proof that DDP kept the replicas identical."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, h.hexdigest())
    return digests
