"""The stage loop: one run = one directory; stages skip when their fingerprint is unchanged.

Run dir layout (everything a later stage needs is read from here, never from memory — that is what
makes kill -9 + rerun safe):
    config.yaml        resolved spec + overrides
    meta.json          who/where/versions/git sha/data fingerprint, per-stage status and times
    stages/<name>.done the fingerprint the stage finished with
    logs/ checkpoints/ metrics.json report.html
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

from rich.markup import escape

from hackathon.core import ddp, elastic, gpus, registry
from hackathon.core.atomic import atomic_write_text, read_json
from hackathon.core.config import cfg_slice, load_config, to_yaml
from hackathon.core.errors import HackathonError
from hackathon.core.fingerprint import combine, obj_fingerprint, path_fingerprint
from hackathon.core.logs import attach_run_log, detach_run_log, get_logger, redact
from hackathon.core.paths import REPO_ROOT, current_user, default_run_dir
from hackathon.core.progress import log_tail, stage_output
# Stage, RunContext, ... live in hackathon.core.run_context; re-exported here for the pipelines and tests.
from hackathon.core.run_context import (RunContext, Stage, config_hash, find_resumable_run,  # noqa: F401
                                   pipeline_module)

log = get_logger("hackathon.runner")

# Versions recorded in meta.json; read from package metadata, so nothing heavy is imported.
RECORDED_PACKAGES = ("hackathon", "torch", "torchvision", "nemo_toolkit", "lightning", "pytorch-lightning",
                     "hydra-core", "omegaconf", "onnxruntime", "pycocotools", "docker", "numpy")


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        sha = out.stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:
        return None


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _stage_fingerprint(ctx: RunContext, stage: Stage, previous: str) -> str:
    parts = [previous, stage.name, obj_fingerprint(cfg_slice(ctx.cfg, stage.config_keys))]
    if stage.inputs is not None:
        parts += [path_fingerprint(p) for p in stage.inputs(ctx)]
    return combine(*parts)


def _select(stages: list[Stage], from_stage: str | None, only: str | None) -> tuple[set[str], set[str]]:
    """(stages to consider, stages forced to re-run)."""
    names = [s.name for s in stages]
    for wanted in (from_stage, only):
        if wanted is not None and wanted not in names:
            raise HackathonError(f"No stage named {wanted!r}.", fix=f"Stages of this task: {', '.join(names)}.")
    if only:
        return {only}, {only}
    if from_stage:
        i = names.index(from_stage)
        return set(names), set(names[i:])
    return set(names), set()


def prepare_run(task: str, overrides: Sequence[str] = (), spec: str | None = None,
                run_dir: str | os.PathLike | None = None, new: bool = False) -> RunContext:
    cfg = load_config(task, spec, overrides)
    chash = config_hash(cfg)
    if run_dir is not None:
        rd = Path(run_dir)
    else:
        rd = None if new else find_resumable_run(task, chash)
        rd = rd or default_run_dir(task)
    rd = rd.resolve()
    rd.mkdir(parents=True, exist_ok=True)
    meta = read_json(rd / "meta.json", default=None) or {}
    if meta.get("config_hash") not in (None, chash):
        log.info("config changed since the last start of %s: stages whose inputs changed will re-run", rd)
    meta.update({
        "task": task,
        "run_dir": str(rd),
        "user": current_user(),
        "host": socket.gethostname(),
        "git_sha": git_sha(),
        "versions": package_versions(),
        "config_hash": chash,
        "argv_overrides": list(overrides),
    })
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
    meta.setdefault("stages", {})
    ctx = RunContext(task=task, run_dir=rd, cfg=cfg, meta=meta)
    atomic_write_text(rd / "config.yaml", to_yaml(cfg))
    ctx.save_meta()
    return ctx


def execute_stages(ctx: RunContext, stages: list[Stage], from_stage: str | None = None,
                   only: str | None = None, force: bool = False, echo: Callable[[str], None] = print) -> None:
    considered, forced = _select(stages, from_stage, only)
    previous = ""
    stages_dir = ctx.dir("stages")
    for i, stage in enumerate(stages):
        if i == 1 and ctx.meta.get("data_fingerprint"):
            # The first stage (prepare) records the data fingerprint: new data re-runs everything after it.
            previous = combine(previous, ctx.meta["data_fingerprint"])
        fp = _stage_fingerprint(ctx, stage, previous)
        previous = fp
        if stage.name not in considered:
            continue
        done_file = stages_dir / f"{stage.name}.done"
        entry = ctx.meta["stages"].setdefault(stage.name, {})
        if not force and stage.name not in forced and done_file.exists() and done_file.read_text().strip() == fp:
            echo(f"skip   {stage.name}: done, inputs unchanged")
            continue
        ctx.stage = stage.name
        ctx.resuming = entry.get("status") in ("running", "failed", "interrupted")
        if ctx.resuming:
            echo(f"resume {stage.name}: last attempt ended as '{entry.get('status')}'; picking up its outputs")
        entry.update({"status": "running", "start": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "attempts": entry.get("attempts", 0) + 1, "resumed": ctx.resuming})
        entry.pop("error", None)
        entry.pop("end", None)
        ctx.save_meta()
        t0 = time.time()
        stage_log = ctx.logs_dir / f"{stage.name}.log"
        try:
            # Library output (NeMo, Lightning, ONNX, child processes) goes to logs/<stage>.log, not the console.
            with stage_output(stage_log):
                try:
                    stage.fn(ctx)
                except HackathonError as exc:  # our own message + fix: the CLI prints it; the log keeps it too
                    print(f"error: {exc}", file=sys.stderr)
                    raise
                except BaseException:
                    traceback.print_exc()  # into the stage log: the console shows its tail
                    raise
        except KeyboardInterrupt:
            entry.update({"status": "interrupted", "seconds": round(time.time() - t0, 2)})
            ctx.save_meta()
            echo(f"stopped {stage.name} after {time.time() - t0:.1f} s (log: {stage_log})")
            raise
        except BaseException as exc:
            entry.update({"status": "failed", "seconds": round(time.time() - t0, 2),
                          "error": str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__})
            ctx.save_meta()
            log.error("stage %s failed:\n%s", stage.name, traceback.format_exc())
            echo(f"[red]FAILED[/] {stage.name} after {time.time() - t0:.1f} s; last lines of {stage_log}:")
            for line in log_tail(stage_log):
                echo(f"  | {escape(redact(line))}")
            raise
        entry.update({"status": "done", "end": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "seconds": round(time.time() - t0, 2)})
        atomic_write_text(done_file, fp + "\n")
        ctx.save_meta()
        echo(f"done   {stage.name:<12} {entry['seconds']:8.1f} s")
    ctx.stage = None


def _finish_team_records(ctx: RunContext, error: BaseException | None, echo: Callable[[str], None]) -> None:
    """Registry row (status, metrics.json) and report.html at the end of every run, failed ones too.
    Their own failures are logged, never raised over the run's real outcome."""
    try:
        registry.record_run_end(ctx, error)
    except Exception as exc:
        log.warning("could not record the run in the registry: %s", exc)
    try:
        from hackathon.core.report import write_run_report

        echo(f"report: {write_run_report(ctx.run_dir)}")
    except Exception:
        log.warning("could not write report.html:\n%s", traceback.format_exc())


def run_task(task: str, overrides: Sequence[str] = (), spec: str | None = None,
             run_dir: str | os.PathLike | None = None, from_stage: str | None = None,
             only: str | None = None, force: bool = False, new: bool = False, wait: bool = True,
             echo: Callable[[str], None] = print) -> RunContext:
    """`hackathon run TASK`: resolve config, pick/create the run dir, run the task's stages."""
    # launcher=torchrun: rank variables around this process (a cluster's pod env) are not ours; the
    # workers torchrun starts run hackathon.core.elastic_worker, never this function.
    role = elastic.claim_role(task, overrides, spec, run_dir, new)  # None unless launcher=torchrun
    if role is not None and not role.coordinator:  # another process runs this run: add a node to it
        return elastic.join_run(task, role, overrides, spec, echo, pipeline=pipeline_module)
    if role is None and ddp.is_worker_process():  # an extra DDP process re-running this command: it only joins training
        return ddp.run_worker(task, overrides, spec, run_dir, echo, pipeline=pipeline_module)
    ctx = prepare_run(task, overrides, spec, role.run_dir if role else run_dir, new)
    ddp.publish_run_dir(ctx.run_dir)
    stages = pipeline_module(task).build_stages(ctx.cfg)
    if role is not None:
        stages = elastic.under_torchrun(ctx, stages, echo)
    handler = attach_run_log(ctx.run_dir)
    echo(f"run dir: {ctx.run_dir}")
    log.info("run %s started by %s on %s (overrides: %s)", task, ctx.meta["user"], ctx.meta["host"], list(overrides))
    ctx.meta["status"] = "queued"
    ctx.save_meta()
    error: BaseException | None = None
    try:
        registry.record_run_start(ctx)
        with gpus.run_device_locks(ctx, stages, wait=wait, echo=echo):
            ctx.meta["status"] = "running"
            ctx.save_meta()
            registry.record_run_status(ctx)
            execute_stages(ctx, stages, from_stage, only, force, echo)
        ctx.meta["status"] = "done"
    except BaseException as exc:
        ctx.meta["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        error = exc
        raise
    finally:
        ctx.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        ctx.save_meta()
        _finish_team_records(ctx, error, echo)
        detach_run_log(handler)
        if role is not None:
            role.release()
    return ctx
