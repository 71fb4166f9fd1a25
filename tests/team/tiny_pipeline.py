"""A tiny real pipeline for the team tests: the real runner (run dir, meta, locks, registry, report)
around stages that only sleep and write metrics taken from the spec.

Run it in its own process (what `hackathon run` does) with:
    python -m tests.team.tiny_pipeline TASK SPEC.yaml RUN_DIR [--no-wait]
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

from hackathon.core.runner import Stage


def write_tiny_spec(path: Path, metrics: dict, seconds: float = 0.0, lock_keys: str | None = None,
                    fail: bool = False, accelerator: str = "cpu", devices: int = 1) -> Path:
    lines = ["trainer:", f"  accelerator: {accelerator}", f"  devices: {devices}", "work:", f"  seconds: {seconds}",
             f"  fail: {str(fail).lower()}", "result:"]
    lines += [f"  {k}: {v}" for k, v in metrics.items()] or ["  {}"]
    if lock_keys is not None:
        lines.append(f"lock_keys: {lock_keys}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _prepare(ctx):
    ctx.path("data", "items.txt").write_text("a\nb\n")
    ctx.set_data_fingerprint("tiny-data-v1")


def _train(ctx):
    marks = ctx.path("train_marks.txt")
    with open(marks, "a") as fh:
        fh.write(f"start {time.time():.3f}\n")
    time.sleep(float(ctx.cfg.work.seconds))
    if ctx.cfg.work.fail:
        raise RuntimeError("tiny training failed on purpose")
    with open(marks, "a") as fh:
        fh.write(f"end {time.time():.3f}\n")


def _evaluate(ctx):
    from omegaconf import OmegaConf

    ctx.write_metrics(OmegaConf.to_container(ctx.cfg.result))


def build_stages(cfg):
    return [Stage("prepare", _prepare, "data", ("trainer",)), Stage("train", _train, "train", ("work",), trainer="trainer"),
            Stage("evaluate", _evaluate, "evaluate", ("result",))]


def use_tiny_pipeline(runner_module) -> None:
    """Point the runner at this module for every task (tests monkeypatch; the __main__ below patches)."""
    runner_module.pipeline_module = lambda task: types.SimpleNamespace(build_stages=build_stages)


def main(argv: list[str]) -> int:
    import hackathon.core.runner as runner
    from hackathon.core.errors import HackathonError

    task, spec, run_dir = argv[:3]
    use_tiny_pipeline(runner)
    try:
        runner.run_task(task, spec=spec, run_dir=run_dir, wait="--no-wait" not in argv,
                        echo=lambda s: print(s, flush=True))
    except HackathonError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
