"""hackathon.core.progress: a stage's output (print, logging, warnings, C-level writes, child processes) lands in
its log and not on the console; bars reach the console (plain lines when it is not a terminal); -v tees."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

SCRIPT = textwrap.dedent('''
    import logging, os, subprocess, sys, warnings
    from pathlib import Path
    from hackathon.core import progress
    progress.set_verbose(sys.argv[2] == "verbose")
    log = Path(sys.argv[1])
    progress.terminal().print("before the stage")
    with progress.stage_output(log):
        print("python print")
        logging.getLogger("nemo_logger").addHandler(logging.StreamHandler(sys.stderr))
        logging.getLogger("nemo_logger").warning("library logging")
        warnings.warn("a library warning")
        os.write(2, b"C-level write\\n")
        subprocess.run([sys.executable, "-c", "print('child process')"], check=True)
        with progress.bar("train", total=8, unit="step") as b:
            for i in range(8):
                b.update(advance=1, epoch=f"{i // 4 + 1}/2", loss=1.0 / (i + 1))
        for _ in progress.track(range(3), "inference", unit="clip"):
            pass
    progress.terminal().print("after the stage")
''')


def _run(tmp_path, mode: str) -> tuple[list[str], str]:
    log = tmp_path / "logs" / "train.log"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(log), mode], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return (proc.stdout + proc.stderr).splitlines(), log.read_text()


def test_stage_output_goes_to_the_log_and_bars_to_the_console(tmp_path):
    console, log = _run(tmp_path, "quiet")
    for line in ("python print", "library logging", "a library warning", "C-level write", "child process"):
        assert line in log and not any(line in c for c in console), line
    assert console[0] == "before the stage" and console[-1] == "after the stage"
    train = [c for c in console if c.startswith("  train: step ")]
    # not a terminal: a line at the start and at each quarter, the last with the fields and the time taken
    assert len(train) == 5 and train[0].startswith("  train: step 1/8 (12%)")
    assert train[-1].startswith("  train: step 8/8 (100%)  epoch 2/2  loss 0.125  in ")
    assert any(c.startswith("  inference: clip 3/3 (100%)") for c in console)
    assert "train: step" not in log


def test_verbose_streams_the_log_to_the_console_too(tmp_path):
    console, log = _run(tmp_path, "verbose")
    for line in ("python print", "library logging", "C-level write", "child process"):
        assert line in log and any(line in c for c in console), line


def test_log_tail(tmp_path):
    from hackathon.core.progress import log_tail

    p = tmp_path / "x.log"
    p.write_text("".join(f"line {i}\n\n" for i in range(40)))
    assert log_tail(p, 3) == ["line 37", "line 38", "line 39"] and log_tail(tmp_path / "missing.log") == []
    p.write_text("old attempt\n==== 2026-01-01 stage start\nnew 1\nnew 2\n")
    assert log_tail(p) == ["new 1", "new 2"]  # the latest attempt only


def test_bars_on_a_terminal_plain_lines_elsewhere_and_the_notebook_cell(monkeypatch):
    """Terminal: rich bars. Pipe/CI: plain lines. Jupyter (an IPython kernel, no tty): the console writes to the
    kernel's sys.stdout (the cell), rich bars when ipywidgets can draw them, plain lines when it is missing."""
    import builtins
    import importlib.util
    import io

    from rich.console import Console

    from hackathon.core import progress

    assert progress.live_bars(Console(file=io.StringIO(), force_terminal=True))
    assert not progress.live_bars(Console(file=io.StringIO()))
    notebook = Console(file=io.StringIO(), force_jupyter=True)
    real_find_spec = importlib.util.find_spec
    for widgets in (True, False):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (object() if widgets else None)
                            if name == "ipywidgets" else real_find_spec(name, *a))
        assert progress.live_bars(notebook) is widgets
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)

    ZMQInteractiveShell = type("ZMQInteractiveShell", (), {})  # what ipykernel's get_ipython() returns
    cell = io.StringIO()
    monkeypatch.setattr(builtins, "get_ipython", ZMQInteractiveShell, raising=False)
    monkeypatch.setattr(sys, "stdout", cell)
    monkeypatch.setitem(progress._state, "consoles", {})
    console = progress.terminal()
    assert console.is_jupyter and console.file is cell and not console.is_terminal


LONG_LABEL = "train fastpitch on every sentence of the workstation corpus"


def test_progress_line_at_80_columns_shortens_the_bar_never_the_counts_or_eta():
    from rich.cells import cell_len

    from hackathon.core.progress import progress_line

    fields = {"epoch": "2/10", "loss": 0.12345, "val_wer": 0.5}
    for width in (200, 120, 80, 60, 40):
        line = progress_line(LONG_LABEL, 113, 3000, dict(fields), elapsed=65, eta=1600, width=width).plain
        assert cell_len(line) <= width and "113/3000  " in line and "  eta 26m40s" in line, (width, line)
    wide = progress_line("train", 113, 3000, dict(fields), elapsed=65, eta=1600, width=120).plain
    assert "━" in wide and "113/3000  epoch 2/10  loss 0.1235  val_wer 0.5  1m05s  eta 26m40s" in wide  # room: all of it
    narrow = progress_line(LONG_LABEL, 113, 3000, dict(fields), elapsed=65, eta=1600, width=40).plain
    assert narrow == "  train fastpitch…  113/3000  eta 26m40s"  # bar, fields, elapsed gone; label shortened
    done = progress_line("train", 3000, 3000, {}, elapsed=65, eta=0, width=80).plain
    assert done.endswith("3000/3000  in 1m05s")


def test_bar_on_an_80_column_terminal_shows_count_and_eta_uncut(monkeypatch):
    """A real Bar on a terminal console (COLUMNS=80): every frame it draws fits and keeps the count and ETA."""
    import io
    import re

    from rich.cells import cell_len
    from rich.console import Console

    from hackathon.core import progress

    monkeypatch.setenv("COLUMNS", "80")
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, highlight=False, soft_wrap=True)
    assert console.width == 80
    monkeypatch.setitem(progress._state, "consoles", {"stderr": (sys.stderr, console)})
    with progress.bar(LONG_LABEL, total=3000) as b:
        b.update(completed=113, epoch="2/10", loss=0.12345)
        b._live.refresh()
        frames = [f for f in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", screen.getvalue()).split("\n") if f.strip()]
    assert frames and all(cell_len(f) <= 80 for f in frames), frames
    assert re.search(r"113/3000  eta \d+m\d\ds", frames[-1]), frames
