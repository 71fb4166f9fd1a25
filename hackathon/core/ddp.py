"""Multi-GPU / multi-node runs: what the extra DDP processes do when they re-enter `hackathon run`.

Lightning's DDP launcher starts each extra process by re-running the same command line (with
LOCAL_RANK/NODE_RANK set); torchrun starts every process of every node that way from the outset. Such a
"worker" must not redo the run's bookkeeping (prepare data, write meta.json, registry, report) — rank 0
does that. A worker only joins the training: it finds rank 0's run directory, waits until rank 0 is
inside a train stage on the engine (Stage.on_engine), runs that stage function
with a context that never writes meta.json/metrics.json, and exits. Lightning/torch.distributed then
connect the processes; Lightning itself keeps checkpoints and logs to rank 0.

The run directory reaches the workers through HACKATHON_RUN_DIR (exported by rank 0 and inherited by
the processes Lightning launches) or --run-dir (needed for torchrun / several machines: give every node
the same path on a shared filesystem).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger
from hackathon.core.run_context import (WorkerContext, config_hash, find_resumable_run, pipeline_module,
                                   wait_for_running_stage)

log = get_logger("hackathon.ddp")

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
RUN_DIR_ENV = "HACKATHON_RUN_DIR"
WAIT_FOR_RANK0_SECONDS = 3600.0  # rank 0 may still be preparing data on another machine


def is_worker_process() -> bool:
    """True in every process of a DDP run but the first process of the first node (global rank 0)."""
    return any(os.environ.get(v, "0") not in ("", "0") for v in RANK_VARIABLES)


def publish_run_dir(run_dir: Path) -> None:
    """Processes Lightning launches inherit this environment: they find the run dir even with --new."""
    os.environ[RUN_DIR_ENV] = str(run_dir)


def _worker_run_dir(task: str, cfg, run_dir) -> Path:
    chosen = os.environ.get(RUN_DIR_ENV) or run_dir or find_resumable_run(task, config_hash(cfg))
    if not chosen:
        raise HackathonError(f"DDP worker process (rank variables {_ranks()}) cannot find the {task} run directory.",
                             fix="Start every node with the same --run-dir on a shared filesystem (see docs/MULTI_GPU.md).")
    return Path(chosen).resolve()


def _ranks() -> str:
    return ", ".join(f"{v}={os.environ[v]}" for v in RANK_VARIABLES if v in os.environ)


def run_worker(task: str, overrides: Sequence[str] = (), spec: str | None = None, run_dir=None,
               echo: Callable[[str], None] = print, timeout: float = WAIT_FOR_RANK0_SECONDS,
               pipeline: Callable = pipeline_module):
    """Join rank 0's training stage (see the module docstring). Returns the worker's context.
    `pipeline(task)` gives the task's module with build_stages (the runner passes its own lookup)."""
    from hackathon.core import gpus
    from hackathon.core.config import load_config

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    cfg = load_config(task, spec, overrides)
    rd = _worker_run_dir(task, cfg, run_dir)
    all_stages = pipeline(task).build_stages(cfg)
    stages = {s.name: s for s in all_stages if s.on_engine}
    if not stages:
        raise HackathonError(f"The {task} pipeline has no stage trained on the engine: nothing for a DDP "
                             "worker to join.", fix="Run it on one device (trainer.devices=1).")
    echo(f"DDP worker ({_ranks()}): waiting for rank 0's training stages in {rd}")
    ctx = None
    # Lightning starts the workers once per process: every later fit of rank 0 (e.g. TTS fastpitch then
    # hifigan) must find them again, so a worker follows rank 0 through all its training stages.
    fix = "Start rank 0 (NODE_RANK=0) with the same command and --run-dir."
    while (found := wait_for_running_stage(rd, lambda name, _: name in stages, started, timeout, fix)) is not None:
        name, meta = found
        ctx = WorkerContext(task=task, run_dir=rd, cfg=cfg, meta=meta, stage=name,
                            resuming=bool(meta["stages"][name].get("resumed")))
        echo(f"DDP worker ({_ranks()}): joining stage {name}")
        # The first process on each further machine holds that machine's GPU locks while it trains.
        with gpus.run_device_locks(ctx, all_stages, echo=echo) if gpus.is_lock_owner_process() else contextlib.nullcontext():
            stages[name].fn(ctx)
        del stages[name]
    return ctx
