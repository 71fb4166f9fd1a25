"""The Python API (notebooks): `hackathon.run("asr", overrides={...})` is `hackathon run asr key=value ...`.

Same run loop, run dirs, resume, GPU locks, registry and report as the CLI; stage lines and progress go to the
notebook cell. A failing stage raises (HackathonError with its fix, like the CLI); a finished run returns a Run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from hackathon.core.atomic import read_json
from hackathon.core.errors import HackathonError
from hackathon.core.paths import TASKS


@dataclass
class Run:
    """A run directory as the notebook sees it: status and metrics from its meta.json / metrics.json."""

    task: str
    run_dir: Path
    status: str | None
    metrics: dict = field(default_factory=dict)
    report: Path | None = None  # report.html, open it in the browser or IPython.display.IFrame

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "Run":
        run_dir = Path(run_dir)
        meta = read_json(run_dir / "meta.json", default=None)
        if meta is None:
            raise HackathonError(f"{run_dir} is not a run directory (no meta.json).",
                                 fix="Pass a directory made by hackathon run / hackathon.run().")
        report = run_dir / "report.html"
        return cls(task=meta.get("task", ""), run_dir=run_dir, status=meta.get("status"),
                   metrics=read_json(run_dir / "metrics.json", default={}), report=report if report.is_file() else None)


def _override_items(overrides: Mapping | Sequence[str] | None) -> list[str]:
    """{"trainer.max_epochs": 2, "data.source": None} -> ["trainer.max_epochs=2", "data.source=null"]."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise HackathonError(f"overrides={overrides!r} is one string.",
                             fix='Pass a dict {"key": value} or a list ["key=value", ...].')
    if isinstance(overrides, Mapping):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    return [str(item) for item in overrides]


def run(task: str, overrides: Mapping | Sequence[str] | None = None, spec: str | None = None,
        run_dir: str | os.PathLike | None = None, *, from_stage: str | None = None, only: str | None = None,
        force: bool = False, new: bool = False, wait: bool = True, verbose: bool = False) -> Run:
    """Run one pipeline (asr | tts | detect) and return its Run. Arguments mean what `hackathon run`'s do:
    a spec name or YAML path, overrides as {key: value} or ["key=value"], the run dir (default: a new one,
    or the newest run with the same config, which is resumed), from_stage/only/force/new, wait for the GPU."""
    from hackathon.core.progress import set_verbose, terminal
    from hackathon.core.runner import run_task

    if task not in TASKS:
        raise HackathonError(f"Unknown task {task!r}.", fix=f"Use one of: {', '.join(TASKS)} (one call per task).")
    set_verbose(verbose)
    ctx = run_task(task, _override_items(overrides), spec=spec, run_dir=run_dir, from_stage=from_stage, only=only,
                   force=force, new=new, wait=wait, echo=terminal().print)
    return Run.load(ctx.run_dir)
