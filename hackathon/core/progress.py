"""The console of `hackathon run`: stage lines and progress bars on the terminal, library output in the run's logs.

- `stage_output(log_path)`: while a stage runs, file descriptors 1 and 2 point at `logs/<stage>.log`, so
  print(), logging handlers (NeMo's, Lightning's), warnings, C libraries (ONNX, espeak) and child
  processes all write there. `set_verbose(True)` (`hackathon run -v`) also streams it to the terminal.
- `terminal()`: a rich Console on a copy of the original stdout, taken before any redirection: the only
  way stage lines and bars reach the user while a stage's output is redirected.
- `bar(description, total)`: one progress bar (rich on a tty or in Jupyter with ipywidgets; on CI / `| tee`
  / a notebook without ipywidgets, a plain line at every quarter and at least once a minute). `track()` wraps an iterable; `lightning_callback()` drives a bar
  from any Lightning fit (epoch, step, loss, validation metric). Every trainer and long data step uses these.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

_state: dict = {"console": None, "stderr": None, "verbose": False, "in_stage": False}
ATTEMPT_MARK = "===="  # starts the line that opens each attempt's part of a stage log (logs are appended)
PLAIN_EVERY_S = 60.0  # non-tty: a progress line at least this often (plus one per quarter)


def terminal():
    """Rich Console writing to the terminal the command was started on (a dup of fd 1 made once); in a
    Jupyter kernel, to the cell (the kernel's sys.stdout: its fd 1 is the server's log, not the notebook)."""
    if _state["console"] is None:
        from rich.console import Console

        stream = sys.stdout  # in a notebook; also where there is no real stdout (embedded)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if not Console().is_jupyter:
                sys.stdout.flush()
                stream = os.fdopen(os.dup(sys.__stdout__.fileno()), "w", buffering=1, encoding="utf-8",
                                   errors="replace")
        _state["console"] = Console(file=stream, highlight=False, soft_wrap=True)
    return _state["console"]


def bar_console():
    """Where bars go: the terminal during a stage; stderr otherwise (`hackathon asr transcribe > out.txt`
    keeps its stdout clean)."""
    if _state["in_stage"]:
        return terminal()
    if _state["stderr"] is None:
        from rich.console import Console

        _state["stderr"] = Console(stderr=True, highlight=False, soft_wrap=True)
    return _state["stderr"]


def live_bars(console) -> bool:
    """Rich bars on a terminal, and in Jupyter where ipywidgets can draw them; else plain progress lines."""
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None if console.is_jupyter else console.is_terminal


def set_verbose(verbose: bool) -> None:
    _state["verbose"] = bool(verbose)


@contextlib.contextmanager
def stage_output(log_path: Path) -> Iterator[Path]:
    """Send everything written to fd 1/2 during the block to `log_path` (appended), tee'd to the terminal with -v."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console = terminal()  # dup the real stdout before it is redirected
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    log_file = open(log_path, "ab")
    log_file.write(f"\n{ATTEMPT_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')} stage start\n".encode())
    log_file.flush()

    def pump() -> None:  # pipe -> log file (+ terminal with -v); a thread so nothing blocks on a full pipe
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            log_file.write(chunk)
            log_file.flush()
            if _state["verbose"]:
                console.file.write(chunk.decode("utf-8", errors="replace"))
                console.file.flush()

    thread = threading.Thread(target=pump, name="stage-output", daemon=True)
    thread.start()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    _state["in_stage"] = True
    try:
        yield log_path
    finally:
        _state["in_stage"] = False
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        thread.join(timeout=10)  # EOF once no process holds the write end (children that outlive the stage: stop waiting)
        if not thread.is_alive():
            os.close(read_end)
        log_file.close()


def log_tail(log_path: Path, lines: int = 15) -> list[str]:
    """The last `lines` non-empty lines of the latest attempt in a stage log (what the console shows when
    the stage fails)."""
    tail: deque = deque(maxlen=lines)
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(ATTEMPT_MARK):
                    tail.clear()
                elif line.strip():
                    tail.append(line.rstrip())
    except OSError:
        return []
    return list(tail)


def _fmt_seconds(s: float | None) -> str:
    if s is None or s != s or s < 0:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _fmt_fields(fields: dict) -> str:
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


class Bar:
    """One progress bar: `update(completed=/advance=, **fields)` (fields: epoch, loss, val_wer, ...)."""

    def __init__(self, description: str, total: int | None, unit: str = "step"):
        self.description, self.total, self.unit = description, total, unit
        self.completed = 0
        self.fields: dict = {}
        self.t0 = time.time()
        self._rich = None
        self._last_line_t = 0.0
        self._last_quarter = -1
        self._console = console = bar_console()
        if live_bars(console):
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._rich = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TextColumn("eta"), TimeRemainingColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)
            self._task = self._rich.add_task(description, total=total, info="")
            self._rich.start()

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._rich is not None:
            self._rich.update(self._task, total=total)

    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        self.completed = completed if completed is not None else self.completed + advance
        self.fields.update(fields)
        if self._rich is not None:
            self._rich.update(self._task, completed=self.completed, info=_fmt_fields(self.fields))
            return
        quarter = int(4 * self.completed / self.total) if self.total else -1
        now = time.time()
        if quarter > self._last_quarter or now - self._last_line_t >= PLAIN_EVERY_S:
            self._last_quarter = max(quarter, self._last_quarter)
            self._plain_line()

    def _eta(self) -> float | None:
        if not self.total or not self.completed:
            return None
        return (time.time() - self.t0) * (self.total - self.completed) / self.completed

    def _plain_line(self) -> None:
        self._last_line_t = time.time()
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.completed // self.total}%)" if self.total else ""
        done = self.total is not None and self.completed >= self.total
        tail = f"in {_fmt_seconds(time.time() - self.t0)}" if done else f"eta {_fmt_seconds(self._eta())}"
        info = _fmt_fields(self.fields)
        self._console.print(f"  {self.description}: {self.unit} {self.completed}{of}{pct}"
                         + (f"  {info}" if info else "") + f"  {tail}", markup=False)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.total is None or self._last_quarter < 4:
            self._plain_line()  # the final state, once


@contextlib.contextmanager
def bar(description: str, total: int | None, unit: str = "step") -> Iterator[Bar]:
    b = Bar(description, total, unit)
    try:
        yield b
    finally:
        b.close()


def track(items: Iterable, description: str, total: int | None = None, unit: str = "item") -> Iterator:
    """Iterate `items` with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(description, total, unit) as b:
        for item in items:
            yield item
            b.update(advance=1)


def lightning_callback(description: str = "train", metrics: tuple[str, ...] = ("loss", "train_loss", "val_wer",
                                                                                 "val_loss", "val_map50")):
    """A Lightning Callback that drives one bar over the whole fit: step of total, epoch, loss, val metric.

    Built by a function so that importing this module never imports Lightning.
    """
    from lightning.pytorch.callbacks import Callback

    class FitProgress(Callback):
        def __init__(self):
            self.bar: Bar | None = None

        def _fields(self, trainer) -> dict:
            out = {"epoch": f"{trainer.current_epoch + 1}/{trainer.max_epochs}"}
            for key, value in trainer.callback_metrics.items():
                short = key.split("/")[-1]
                if key in metrics or short in metrics:
                    try:
                        out[short] = float(value)
                    except (TypeError, ValueError):
                        continue
            return out

        def on_train_start(self, trainer, pl_module):
            if trainer.global_rank != 0:
                return
            total = trainer.estimated_stepping_batches
            total = int(total) if total not in (None, float("inf")) else None
            self.bar = Bar(description, total, unit="step")
            self.bar.update(completed=trainer.global_step)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.bar is not None:
                self.bar.update(completed=trainer.global_step, **self._fields(trainer))

        def on_validation_end(self, trainer, pl_module):
            if self.bar is not None and not trainer.sanity_checking:
                self.bar.update(completed=trainer.global_step, **self._fields(trainer))

        def on_train_end(self, trainer, pl_module):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

        def on_exception(self, trainer, pl_module, exception):
            self.on_train_end(trainer, pl_module)

    return FitProgress()
