"""The console of `hackathon run`: stage lines and progress bars on the terminal, library output in the run's logs.

- `stage_output(log_path)`: while a stage runs, file descriptors 1 and 2 point at `logs/<stage>.log`, so
  print(), logging handlers (NeMo's, Lightning's), warnings, C libraries (ONNX, espeak) and child
  processes all write there. `set_verbose(True)` (`hackathon run -v`) also streams it to the terminal.
- `command_output(command)`: the same for a whole command other than `run` (`tts synthesize`, `serve` ...),
  into <runs>/logs/<command>.log; the CLI wraps every such command in it.
- `terminal()` / `TerminalConsole`: a rich Console on a copy of the original stdout (or stderr), taken before
  any redirection: the only way our lines and bars reach the user while library output is redirected.
- `bar(description, total)`: one progress bar (on a tty, or in Jupyter with ipywidgets, a line that fits
  the width, `progress_line`; on CI / `| tee` / a notebook without ipywidgets, a plain line at every
  quarter and at least once a minute). `track()` wraps an iterable; `lightning_callback()` drives a bar
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

_state: dict = {"consoles": {}, "verbose": False, "in_stage": False}
ATTEMPT_MARK = "===="  # starts the line that opens each attempt's part of a stage log (logs are appended)
PLAIN_EVERY_S = 60.0  # non-tty: a progress line at least this often (plus one per quarter)


def terminal(stream: str = "stdout"):
    """Rich Console on the terminal the command was started on: a dup of the fd behind sys.stdout (or
    sys.stderr), made before any redirection and once per stream object; in a Jupyter kernel, the kernel's
    sys.stdout itself (the cell: its fd 1 is the server's log, not the notebook)."""
    source = getattr(sys, stream)
    cached = _state["consoles"].get(stream)
    if cached is not None and cached[0] is source:
        return cached[1]
    from rich.console import Console

    target = source  # in a notebook; also where there is no real fd (embedded, typer's CliRunner)
    with contextlib.suppress(AttributeError, OSError, ValueError):
        if not Console().is_jupyter:
            source.flush()
            target = os.fdopen(os.dup(source.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    console = Console(file=target, highlight=False, soft_wrap=True)
    _state["consoles"][stream] = (source, console)
    return console


class TerminalConsole:
    """terminal(stream) looked up at each use, so a module-level console follows the current sys.stdout."""

    def __init__(self, stream: str = "stdout"):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(terminal(self._stream), name)

    def out(self, text: str) -> None:
        """Machine-readable output (TSV, JSON) written as it is: rich's own `out` would expand tabs."""
        console = terminal(self._stream)
        console.file.write(text + "\n")
        console.file.flush()


def bar_console():
    """Where bars go: the terminal's stdout during a run's stage (with its stage lines); stderr otherwise
    (`hackathon asr transcribe > out.txt` keeps its stdout clean)."""
    return terminal("stdout" if _state["in_stage"] else "stderr")


def live_bars(console) -> bool:
    """Live bars on a terminal, and in Jupyter where ipywidgets can draw them; else plain progress lines."""
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None if console.is_jupyter else console.is_terminal


def set_verbose(verbose: bool) -> None:
    _state["verbose"] = bool(verbose)


@contextlib.contextmanager
def stage_output(log_path: Path, title: str = "stage start", in_stage: bool = True) -> Iterator[Path]:
    """Send everything written to fd 1/2 during the block to `log_path` (appended), tee'd to the terminal with -v."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console = terminal()  # dup the real stdout and stderr before they are redirected
    terminal("stderr")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    log_file = open(log_path, "ab")
    log_file.write(f"\n{ATTEMPT_MARK} {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n".encode())
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
    was_in_stage, _state["in_stage"] = _state["in_stage"], in_stage
    try:
        yield log_path
    finally:
        _state["in_stage"] = was_in_stage
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


def command_log(command: str) -> Path:
    """Where a command other than `run` keeps its library output: <runs>/logs/<command>.log."""
    from hackathon.core.paths import runs_root

    return runs_root() / "logs" / f"{command}.log"


@contextlib.contextmanager
def command_output(command: str) -> Iterator[Path]:
    """A whole command (`tts synthesize`, `serve`, ...) as `run` treats a stage: NeMo, jieba, tritonserver
    and the rest write to command_log(command); terminal() / TerminalConsole still reach the user."""
    from hackathon.core.logs import redact

    title = redact("hackathon " + " ".join(sys.argv[1:]))
    with stage_output(command_log(command), title=title, in_stage=False) as path:
        yield path


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


def _field_items(fields: dict) -> list[str]:
    return [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items() if v is not None]


BAR_MIN, BAR_MAX = 10, 40  # the bar shrinks to BAR_MIN before anything else goes, then to nothing; counts, ETA never


def progress_line(description: str, completed: int, total: int | None, fields: dict, elapsed: float,
                  eta: float | None, width: int):
    """One bar line that fits `width` cells: the bar shrinks first, then the elapsed time and the fields (last
    first) go, then the bar, then the description is shortened; the count and the ETA are never cut."""
    from rich.cells import cell_len, set_cell_size
    from rich.text import Text

    done = total is not None and completed >= total
    tail = f"in {_fmt_seconds(elapsed)}" if done else f"eta {_fmt_seconds(eta)}"
    parts = [f"{completed}/{total}" if total else str(completed), *_field_items(fields)]
    parts += [] if done else [_fmt_seconds(elapsed)]

    def rest() -> int:  # every cell but the bar's (and its separator)
        return 2 + cell_len(description) + sum(2 + cell_len(x) for x in [*parts, tail])

    while total and len(parts) > 1 and width - rest() - 2 < BAR_MIN:
        parts.pop()
    room = min(BAR_MAX, width - rest() - 2) if total else 0
    if room < BAR_MIN:
        room, over = 0, rest() - width
        if over > 0 and cell_len(description) > 1:
            description = set_cell_size(description, max(1, cell_len(description) - over - 1)) + "\u2026"
    line = Text(f"  {description}")
    if room:
        full, half = divmod(round(2 * room * min(completed, total) / total), 2)
        line.append("  " + "\u2501" * full + "\u2578" * half, style="bar.finished" if done else "bar.complete")
        line.append("\u2501" * (room - full - half), style="bar.back")
    return line.append("".join(f"  {x}" for x in [*parts, tail]))


class Bar:
    """One progress bar: `update(completed=/advance=, **fields)` (fields: epoch, loss, val_wer, ...)."""

    def __init__(self, description: str, total: int | None, unit: str = "step"):
        self.description, self.total, self.unit = description, total, unit
        self.completed = 0
        self.fields: dict = {}
        self.t0 = time.time()
        self._live = None
        self._last_line_t = 0.0
        self._last_quarter = -1
        self._console = console = bar_console()
        if live_bars(console):
            from rich.live import Live

            # library prints must not reach the terminal through the bar: no stdout/stderr redirection
            self._live = Live(self, console=console, refresh_per_second=4, transient=False, redirect_stdout=False,
                              redirect_stderr=False)
            self._live.start()

    def __rich_console__(self, console, options):
        yield progress_line(self.description, self.completed, self.total, self.fields, time.time() - self.t0,
                            self._eta(), options.max_width)

    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        self.completed = completed if completed is not None else self.completed + advance
        self.fields.update(fields)
        if self._live is not None:
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
        info = "  ".join(_field_items(self.fields))
        self._console.print(f"  {self.description}: {self.unit} {self.completed}{of}{pct}"
                         + (f"  {info}" if info else "") + f"  {tail}", markup=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
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
