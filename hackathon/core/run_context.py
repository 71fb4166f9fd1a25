"""What one run is made of, below the stage loop: Stage, RunContext (the run dir, its meta.json and
metrics.json), the task's pipeline module, the config hash and "the newest run with this config".

hackathon.core.runner (the stage loop) and the processes that join a run (hackathon.core.ddp, hackathon.core.elastic)
import these from here, so neither needs the other.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hackathon.core.atomic import atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.fingerprint import obj_fingerprint
from hackathon.core.logs import get_logger
from hackathon.core.paths import current_user, runs_root


# What a stage is. The run loop, DDP, torchrun, GPU locks and progress read this declaration.
STAGE_KINDS = ("data", "model", "train", "evaluate", "export", "report")


@dataclass
class Stage:
    """A named step of a pipeline that says what it is. `fn(ctx)` writes its outputs under ctx.run_dir.

    kind="train" stages declare where their settings live: `trainer` names the spec section of a model
    trained on the one engine (hackathon.core.training; DDP workers and torchrun agents join these), or
    `devices` names the config key with the GPU list of a stage that trains in a container (TAO)."""

    name: str
    fn: Callable[["RunContext"], None]
    kind: str
    config_keys: tuple[str, ...] = ()  # spec sections that change this stage's result
    inputs: Callable[["RunContext"], Sequence[Path]] | None = None  # external files/dirs it reads
    trainer: str | None = None  # kind="train" on the engine: e.g. "trainer", "fastpitch.trainer"
    devices: str | None = None  # kind="train" in docker: the key holding docker's GPU list, e.g. "gpus"

    def __post_init__(self) -> None:
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage {self.name}: kind {self.kind!r} is not one of {STAGE_KINDS}")
        if (self.kind == "train") != bool(self.trainer or self.devices):
            raise ValueError(f"stage {self.name}: a train stage (and only one) names its trainer section or devices key")

    @property
    def on_engine(self) -> bool:
        """Trains through hackathon.core.training: the stages DDP workers and torchrun agents join."""
        return self.kind == "train" and self.trainer is not None


@dataclass
class RunContext:
    task: str
    run_dir: Path
    cfg: Any  # OmegaConf DictConfig
    meta: dict = field(default_factory=dict)
    stage: str | None = None
    resuming: bool = False  # True when the current stage was interrupted before and is re-entered

    @property
    def log(self):
        return get_logger(f"hackathon.{self.task}")

    def path(self, *parts: str, mkdir_parent: bool = True) -> Path:
        p = self.run_dir.joinpath(*parts)
        if mkdir_parent:
            p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def dir(self, *parts: str) -> Path:
        p = self.run_dir.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir("checkpoints")

    @property
    def logs_dir(self) -> Path:
        return self.dir("logs")

    def record(self, **values: Any) -> None:
        """Add facts to the current stage's entry in meta.json (e.g. resumed_from, batch_size)."""
        entry = self.meta.setdefault("stages", {}).setdefault(self.stage or "_run", {})
        entry.update(values)
        self.save_meta()

    def set_data_fingerprint(self, fp: str) -> None:
        self.meta["data_fingerprint"] = fp
        self.save_meta()

    def save_meta(self) -> None:
        atomic_write_json(self.run_dir / "meta.json", self.meta)

    def read_metrics(self) -> dict:
        return read_json(self.run_dir / "metrics.json", default={}) or {}

    def write_metrics(self, values: dict) -> dict:
        """Merge `values` into metrics.json (flat keys)."""
        metrics = self.read_metrics()
        metrics.update(values)
        atomic_write_json(self.run_dir / "metrics.json", metrics)
        return metrics


class WorkerContext(RunContext):
    """The context of a process that joins someone else's run (a DDP or torchrun worker that is not rank
    0, a joining node): the run's owner writes meta.json and metrics.json; a worker's records stay in
    memory."""

    def save_meta(self) -> None:
        pass

    def write_metrics(self, values: dict) -> dict:
        return {**self.read_metrics(), **values}


def pipeline_module(task: str):
    try:
        return importlib.import_module(f"tasks.{task}.pipeline")
    except ModuleNotFoundError as exc:
        if exc.name == f"tasks.{task}.pipeline":
            raise HackathonError(f"The {task} pipeline is not built yet (tasks/{task}/pipeline.py missing).")
        raise


def config_hash(cfg) -> str:
    from omegaconf import OmegaConf

    return obj_fingerprint(OmegaConf.to_container(cfg, resolve=True))


def find_resumable_run(task: str, cfg_hash: str) -> Path | None:
    """The newest run of this task by this user with the same resolved config — so that typing the
    same command again resumes instead of starting over."""
    task_dir = runs_root() / task
    if not task_dir.is_dir():
        return None
    for d in sorted(task_dir.iterdir(), reverse=True):
        meta = read_json(d / "meta.json", default=None) if d.is_dir() else None
        if meta and meta.get("config_hash") == cfg_hash and meta.get("user") == current_user():
            return d
    return None


RUN_ENDED = ("done", "failed", "interrupted")


def wait_for_running_stage(run_dir: Path, accept: Callable[[str, dict], bool], started: str, timeout: float,
                           fix: str, poll: float = 0.5) -> tuple[str, dict] | None:
    """For the processes that follow a run's coordinator (DDP workers, torchrun joiners): wait until the
    run in `run_dir` is inside a stage that `accept(name, entry)` takes and return (name, meta); None once
    the run has ended (after `started`, a "%Y-%m-%dT%H:%M:%S" time: an older run's end does not count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = (read_json(run_dir / "meta.json", default=None) if (run_dir / "meta.json").exists() else None) or {}
        for name, entry in (meta.get("stages") or {}).items():
            if entry.get("status") == "running" and accept(name, entry):
                return name, meta
        if meta.get("status") in RUN_ENDED and str(meta.get("finished", "")) >= started:
            return None
        time.sleep(poll)
    raise HackathonError(f"No training stage of {run_dir} started within {timeout:.0f} s.", fix=fix)
