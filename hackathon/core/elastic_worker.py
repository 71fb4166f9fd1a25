"""One torchrun worker: `python -m torch.distributed.run ... --module hackathon.core.elastic_worker TASK RUN_DIR STAGE`
(started by hackathon/core/elastic.py, never by hand).

The worker reads everything from the run dir (config.yaml, meta.json, the stage's launch file), fits the
stage's trainer settings to the world torchrun gave it (devices = LOCAL_WORLD_SIZE, num_nodes =
WORLD_SIZE / LOCAL_WORLD_SIZE; GPU when there is one, else CPU with gloo) and runs the stage function.
Lightning detects the TorchElastic environment (RANK, WORLD_SIZE, MASTER_ADDR, ... set by torchrun) and
starts no process of its own.

Global rank 0 alone writes: it appends this start to the stage's `elastic` record in meta.json (restart
count, world size, what the fit resumed from); the other ranks get a WorkerContext (records in memory).
After a restart (a worker died, a node joined or left) every worker resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from hackathon.core.atomic import read_json
from hackathon.core.errors import HackathonError
from hackathon.core.run_context import RunContext, WorkerContext, pipeline_module

FIT_STATE_FILE = "fit.json"  # hackathon.core.training's per-folder key file: written at every start, not progress


class RankZeroContext(RunContext):
    """Global rank 0 of an elastic start: a normal context that also files what the fit resumed from
    under this start's entry of `elastic.starts`."""

    start: dict

    def record(self, **values) -> None:
        for key in ("resumed_from", "resumed_epoch"):
            if key in values:
                self.start[key] = values[key]
                # the fit is about to continue: bench/elastic_overhead.py measures kill -> training again
                self.start["resumed_at_unix"] = round(time.time(), 3)
        super().record(**values)


def fit_to_world(cfg, stage, world_size: int, local_world_size: int, local_rank: int) -> None:
    """Trainer settings for the world torchrun formed (it may differ between restarts: elastic)."""
    import torch
    from omegaconf import OmegaConf, open_dict

    if world_size % local_world_size:
        raise HackathonError(f"World size {world_size} is not a multiple of the {local_world_size} workers per node.",
                             fix="Give every node the same elastic.nproc_per_node (and trainer.devices).")
    on_gpu = torch.cuda.is_available()
    trainer = OmegaConf.select(cfg, stage.trainer)
    with open_dict(trainer):
        trainer.accelerator = "gpu" if on_gpu else "cpu"
        trainer.devices = local_world_size
        trainer.num_nodes = world_size // local_world_size


def checkpointed_since(run_dir: Path, reference: Path) -> bool:
    """Did any worker of this launch write a checkpoint (newer than the launch file)?"""
    since = reference.stat().st_mtime
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any(p.is_file() and p.name != FIT_STATE_FILE and p.stat().st_mtime > since
                                  for p in ckpts.rglob("*"))


def env_int(name: str, default: int = 0) -> int:
    return int(os.environ.get(name, default))


def main(argv: list[str]) -> int:
    from omegaconf import OmegaConf

    from hackathon.core.elastic import launch_file
    from hackathon.core.logs import attach_run_log

    task, run_dir, stage_name = argv[0], Path(argv[1]).resolve(), argv[2]
    rank, world = env_int("RANK"), env_int("WORLD_SIZE", 1)
    local_rank, local_world = env_int("LOCAL_RANK"), env_int("LOCAL_WORLD_SIZE", 1)
    restart = env_int("TORCHELASTIC_RESTART_COUNT")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    stages = {s.name: s for s in pipeline_module(task).build_stages(cfg)}
    if stage_name not in stages:
        raise HackathonError(f"The {task} pipeline has no stage {stage_name!r}.", fix="Start it through `hackathon run`.")
    stage = stages[stage_name]
    fit_to_world(cfg, stage, world, local_world, local_rank)
    meta = read_json(run_dir / "meta.json", default={}) or {}
    launch = launch_file(run_dir, stage_name)
    resuming = not (read_json(launch, default={}) or {}).get("fresh", False) or checkpointed_since(run_dir, launch)
    if rank != 0:
        ctx = WorkerContext(task=task, run_dir=run_dir, cfg=cfg, meta=meta, stage=stage_name, resuming=resuming)
        stage.fn(ctx)
        return 0
    attach_run_log(run_dir)
    ctx = RankZeroContext(task=task, run_dir=run_dir, cfg=cfg, meta=meta, stage=stage_name, resuming=resuming)
    info = meta.setdefault("stages", {}).setdefault(stage_name, {}).setdefault("elastic", {})
    starts = info.setdefault("starts", [])
    ctx.start = {"launch": info.get("launches", 1), "restart_count": restart, "world_size": world,
                 "nodes": world // local_world, "host": socket.gethostname(), "pid": os.getpid(),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed_from": None}
    starts.append(ctx.start)
    this_launch = [s for s in starts if s.get("launch") == ctx.start["launch"]]
    info["restarts"] = len(this_launch) - 1  # worker-group restarts, node joins/leaves included
    info["world_sizes"] = sorted({s["world_size"] for s in this_launch})
    ctx.save_meta()
    ctx.log.info("elastic start of %s: rank 0 of %d (%d node(s)), restart count %d, resuming=%s",
                 stage_name, world, world // local_world, restart, resuming)
    stage.fn(ctx)
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record  # the agent shows the traceback

    sys.exit(record(main)(sys.argv[1:]))
