"""`hackathon run asr|tts|detect|all`: run one pipeline or all three, then show the scoreboard."""

from __future__ import annotations

from typing import Callable, Sequence

from hackathon.core.errors import HackathonError
from hackathon.core.paths import TASKS


def run_pipelines(task: str, overrides: Sequence[str], echo: Callable[[str], None] = print, **kwargs) -> None:
    from hackathon.core.runner import run_task

    if task == "all":
        if overrides or kwargs.get("run_dir") or kwargs.get("spec"):
            raise HackathonError("`run all` takes no overrides, --spec or --run-dir (each task has its own spec).",
                                 fix="Run the tasks one by one to customise them: hackathon run asr key=value ...")
        failed = []
        for name in TASKS:
            echo(f"[bold]== {name} ==[/]")
            try:
                run_task(name, (), echo=echo, **{k: v for k, v in kwargs.items() if k not in ("run_dir", "spec")})
            except HackathonError as exc:
                echo(f"[red]{name} failed:[/] {exc}")
                failed.append(name)
        if failed:
            raise HackathonError(f"pipelines failed: {', '.join(failed)}", fix="See the messages above for each.")
        return
    if task not in TASKS:
        raise HackathonError(f"Unknown task {task!r}.", fix=f"Use one of: {', '.join(TASKS)}, all.")
    run_task(task, overrides, echo=echo, **kwargs)
