"""What a person sees, on the serving tests' real runs (tests/serve/conftest.py: serve_runs, triton_server):

- report.html of each task, in Debian's chromium at 1280x800: the first screen shows the task's headline
  metrics and a picture; no table cell holds raw JSON (one browser for the three pages);
- `hackathon tts synthesize` and `hackathon serve` print our lines only: NeMo, jieba, OneLogger, tritonserver
  (NVML on a machine without a GPU) go to <runs>/logs/<command>.log.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.serve.conftest import _env, hackathon_exe

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
# What only library output looks like (what the issue saw on the console: NVML, NeMo, OneLogger, jieba;
# tritonserver's glog lines "I1202 06:01:02.123 ..."), never our own lines.
LIBRARY_LINE = re.compile(r"NVML|\[NeMo|OneLogger|exporters|prefix dict|jieba|Warning|WARNING|Traceback|^[IWE]\d{4} ")


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (the report and gate page tests drive it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.mark.parametrize("task", ["asr", "tts", "detect"])
def test_report_first_screen_shows_headline_metrics_and_a_picture(task, serve_runs, browser, tmp_path_factory):
    report = serve_runs[task] / "report.html"
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(report.as_uri())
        shot = tmp_path_factory.getbasetemp() / f"report-{task}.png"
        page.screenshot(path=str(shot))  # the first screen, for a person to look at
        top = "e => e.getBoundingClientRect().top"
        headline = page.eval_on_selector_all("#headline .card, #headline table", f"els => els.map({top})")
        pictures = page.eval_on_selector_all("#pictures img", f"els => els.map({top})")
        raw_json = page.eval_on_selector_all("td, th", "els => els.map(e => e.innerText).filter(t => /[{}]/.test(t))")
    finally:
        page.close()
    assert headline and min(headline) < VIEWPORT["height"], (shot, headline)
    assert pictures and min(pictures) < VIEWPORT["height"], (shot, pictures)
    assert raw_json == [], raw_json[:3]


def test_tts_synthesize_prints_our_lines_only(serve_runs, tmp_path):
    out = tmp_path / "x.wav"
    env = {**_env(), "HACKATHON_RUNS": str(tmp_path / "runs"), "COLUMNS": "80"}
    said = subprocess.run([hackathon_exe(), "tts", "synthesize", "您好，欧阳娜娜，欢迎回家。", "-o", str(out), "--model",
                           str(serve_runs["tts"])], capture_output=True, text=True, timeout=300, env=env)
    assert said.returncode == 0, said.stdout + said.stderr
    assert len(said.stdout.splitlines()) == 1 and said.stdout.startswith(f"wrote {out} ("), said.stdout
    # stderr: the progress line(s) of the one sentence, nothing else
    assert all(re.match(r"  synthesize: sentence 1/1 \(100%\)  in \d+m\d\ds$", line)
               for line in said.stderr.splitlines()), said.stderr
    log = (tmp_path / "runs" / "logs" / "tts-synthesize.log").read_text(errors="replace")
    assert "[NeMo" in log or "prefix dict" in log, log[-2000:]  # the library lines are kept, in the log


SERVE_LINES = [r"(asr|tts|detect): /\S+$", r"LD_LIBRARY_PATH: ", r"tritonserver log: /\S+$", r"serving asr, tts, ",
               r"(SIGTERM|SIGINT): stopping Triton$", r"Triton stopped$"]


def test_serve_prints_our_lines_only(triton_server):
    """The session's `hackathon serve` (stdout and stderr into one file): our lines; tritonserver's, pytriton's
    and the NVML message of a machine without a GPU are in <runs>/logs/serve.log."""
    lines = [line for line in triton_server.log_tail(200_000).splitlines() if line.strip()]
    assert any(line.startswith("serving ") for line in lines), lines
    strangers = [line for line in lines if not any(re.match(p, line) for p in SERVE_LINES)]
    assert strangers == [], strangers
    assert not [line for line in lines if LIBRARY_LINE.search(line)]
    log = (Path(_env()["HACKATHON_RUNS"]) / "logs" / "serve.log").read_text(errors="replace")
    assert "==== " in log and " serve --asr " in log  # the command's own log, each start headed by its argv
