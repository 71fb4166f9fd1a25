"""`hackathon run asr` as a user sees it on CI / `| tee` (stdout not a tty): stage lines with times and
plain progress lines on the console, NeMo/Lightning/ONNX output in logs/<stage>.log; a failing stage
shows the tail of its log and a fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.asr.conftest import REPO

pytestmark = pytest.mark.slow  # trains the tiny model for one epoch

STAGES = ("prepare", "model", "train", "evaluate", "export", "score")
MAX_CONSOLE_LINES = 60


def _hackathon(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "hackathon"
    return subprocess.run([str(exe), *args], cwd=REPO, env=dict(os.environ), capture_output=True, text=True,
                          timeout=1200)


@pytest.fixture(scope="module")
def console_run(asr_env, tiny_spec_path):
    run_dir = asr_env / "runs" / "asr" / "console"
    args = ("run", "asr", "--spec", str(tiny_spec_path), "--run-dir", str(run_dir), "trainer.max_epochs=1")
    proc = _hackathon(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc, args


def test_console_is_short_and_shows_every_stage_with_its_time(console_run):
    run_dir, proc, _ = console_run
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= MAX_CONSOLE_LINES, "\n".join(lines)
    for stage in STAGES:
        assert any(re.match(rf"done\s+{stage}\s+\d+\.\d s$", line) for line in lines), (stage, lines)
    assert not any("[NeMo" in line or "GPU available" in line or "Optimizer config" in line for line in lines), lines
    # non-tty progress: plain lines for the fit (step, epoch, loss) and for the inference of evaluate
    train = [line for line in lines if line.startswith("  train: step ")]
    assert train and re.search(r"step (\d+)/\1 \(100%\).*epoch 1/1.*loss \d", train[-1]), train
    assert any(line.startswith("  transcribe: clip ") and "(100%)" in line for line in lines), lines
    assert proc.stdout.splitlines()[-1].startswith("report: ")


def test_library_logs_are_in_the_stage_logs(console_run):
    run_dir, _, _ = console_run
    train_log = (run_dir / "logs" / "train.log").read_text(errors="replace")
    assert "[NeMo I" in train_log and "Optimizer config" in train_log  # NeMo's logging
    assert "GPU available" in train_log  # Lightning's
    export_log = (run_dir / "logs" / "export.log").read_text(errors="replace")
    assert "[NeMo " in export_log  # NeMo restoring the model for the ONNX export and its parity check
    assert (run_dir / "logs" / "run.log").is_file()


def test_failing_stage_shows_its_log_tail_and_a_fix(console_run):
    run_dir, _, args = console_run
    # a corrupt model file: NeMo fails deep inside restore_from, with no HackathonError of ours
    trained = run_dir / "model" / "trained.nemo"
    saved = trained.read_bytes()
    try:
        trained.write_bytes(b"not a tar archive")
        proc = _hackathon(*args, "--only", "evaluate")
    finally:
        trained.write_bytes(saved)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    lines = out.splitlines()
    assert any(line.startswith("FAILED evaluate after") and "evaluate.log" in line for line in lines), out
    tail = [line for line in lines if line.startswith("  | ")]  # this attempt's lines only (the log is appended)
    assert 1 <= len(tail) <= 15 and "trained.nemo" in tail[-2] and "stage start" not in out, out
    assert any(line.startswith("error: ") for line in lines) and any(line.startswith("fix: ") for line in lines), out
    assert "Traceback" not in proc.stderr.split("error: ")[-1]  # no raw traceback after the error line
    assert len(lines) <= 30
