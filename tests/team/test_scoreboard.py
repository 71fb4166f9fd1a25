"""Scoreboard: after runs made by the real runner (tiny stages writing metrics.json), `hackathon score`
shows one row per task with the best run by the competition metric and who made it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import hackathon.core.runner as runner
from hackathon.scoreboard import best_runs
from tests.team.tiny_pipeline import use_tiny_pipeline, write_tiny_spec

INITS = {"fastpitch": {"kind": "scratch", "source": "scratch", "loaded": 0, "new": []},
         "hifigan": {"kind": "hub", "source": "tts_zh_hifigan_sfspeech", "loaded": 9, "new": []}}
WEIGHTS = "fastpitch:scratch hifigan:hub tts_zh_hifigan_sfspeech"  # where each model's weights started
RUNS = [  # (task, user, metrics written by the run's evaluate stage into metrics.json)
    ("asr", "ana", {"cer": 0.31, "wer": 0.6}),
    ("asr", "bo", {"cer": 0.12, "wer": 0.3}),  # lowest CER wins
    ("asr", "cy", {"wer": 0.1}),  # no CER: not scored
    ("tts", "ana", {"dnsmos_ovrl": 3.2, "pesq_wb": 1.9}),
    ("tts", "bo", {"dnsmos_ovrl": 3.2, "pesq_wb": 2.4, "init": INITS}),  # same DNSMOS, better PESQ wins the tie
    ("tts", "cy", {"dnsmos_ovrl": 2.9, "pesq_wb": 3.5}),
    ("detect", "cy", {"map50": 0.55, "map": 0.3}),
    ("detect", "ana", {"map50": 0.71, "map": 0.4, "ap50_per_class": {"mask": 0.8}}),  # highest mAP@.5 wins
]


@pytest.fixture
def scored_runs(team_env, tmp_path, monkeypatch):
    use_tiny_pipeline(runner)
    for i, (task, user, metrics) in enumerate(RUNS):
        monkeypatch.setenv("USER", user)
        monkeypatch.setenv("LOGNAME", user)
        spec = write_tiny_spec(tmp_path / f"spec{i}.yaml", metrics)
        runner.run_task(task, spec=str(spec), run_dir=tmp_path / "runs" / task / f"{i}-{user}", echo=lambda s: None)
    monkeypatch.setenv("USER", "viewer")
    return {**team_env, "USER": "viewer", "LOGNAME": "viewer"}


def test_best_run_per_task_by_competition_metric(scored_runs):
    board = {row["task"]: row for row in best_runs()}
    assert list(board) == ["asr", "tts", "detect"]
    assert (board["asr"]["best"]["user"], board["asr"]["best"]["value"]) == ("bo", 0.12)
    assert board["asr"]["scored_runs"] == 2
    assert (board["tts"]["best"]["user"], board["tts"]["best"]["metrics"]["pesq_wb"]) == ("bo", 2.4)
    assert (board["detect"]["best"]["user"], board["detect"]["best"]["value"]) == ("ana", 0.71)
    # the values are the ones the runs wrote to their metrics.json
    best_dir = Path(board["detect"]["best"]["run_dir"])
    assert json.loads((best_dir / "metrics.json").read_text())["map50"] == 0.71


def test_score_on_an_80_column_terminal_is_a_line_per_task(scored_runs, hackathon_bin):
    """`make demo` ends with `hackathon score`: at 80 columns the table's cells wrapped into ~40 lines."""
    out = subprocess.run([hackathon_bin, "score"], env={**scored_runs, "COLUMNS": "80"}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) <= 8, out.stdout
    heads = [line for line in lines if re.match(r"^  (asr|tts|detect) ", line)]
    assert [h.split()[0] for h in heads] == ["asr", "tts", "detect"], out.stdout
    assert "cer=0.1200" in heads[0] and "by bo," in heads[0]
    assert "dnsmos_ovrl=3.2000 pesq_wb=2.4000" in heads[1] and "map50=0.7100" in heads[2] and "by ana," in heads[2]
    assert any(line.startswith("          ") and "wer=0.3" in line for line in lines), out.stdout
    assert f"          weights: {WEIGHTS}" in lines, out.stdout


def test_score_command_table_json_and_html(scored_runs, tmp_path, hackathon_bin):
    env = {**scored_runs, "COLUMNS": "250"}
    out = subprocess.run([hackathon_bin, "score"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if re.match(r"^│ (asr|tts|detect) ", line)]
    assert [r.split()[1] for r in rows] == ["asr", "tts", "detect"], out.stdout
    assert "cer=0.1200" in rows[0] and " bo " in rows[0] and "wer=0.3" in rows[0]
    assert "dnsmos_ovrl=3.2000 pesq_wb=2.4000" in rows[1] and " bo " in rows[1]
    assert "map50=0.7100" in rows[2] and " ana " in rows[2] and "map=0.4" in rows[2]
    assert "ap50_per_class" not in out.stdout  # nested metrics stay in the report
    assert WEIGHTS in rows[1], out.stdout

    js = subprocess.run([hackathon_bin, "score", "--json"], env=env, capture_output=True, text=True, timeout=60)
    board = json.loads(js.stdout)
    assert [(r["task"], r["best"]["user"], r["best"]["value"]) for r in board] == [
        ("asr", "bo", 0.12), ("tts", "bo", 3.2), ("detect", "ana", 0.71)]

    index = tmp_path / "site" / "index.html"
    html_run = subprocess.run([hackathon_bin, "score", "--html", str(index)], env=env, capture_output=True,
                              text=True, timeout=60)
    assert html_run.returncode == 0, html_run.stderr
    page = index.read_text()
    links = re.findall(r'<a href="([^"]+)">report</a>', page)
    assert len(links) == len(RUNS) + 3  # every run, plus the three best runs in the scoreboard table
    for href in links:
        assert (index.parent / href).resolve().is_file()


def test_task_without_scored_runs_still_has_its_row(team_env):
    board = best_runs([])
    assert [(r["task"], r["best"]) for r in board] == [("asr", None), ("tts", None), ("detect", None)]


def test_asr_backends_side_by_side_per_data_fingerprint():
    from hackathon.scoreboard import backend_comparison

    def run(name, fp, **metrics):
        return {"task": "asr", "run_dir": f"/runs/asr/{name}", "data_fingerprint": fp, "metrics": metrics}

    runs = [run("n1", "aaaa", cer=0.30), run("n2", "aaaa", cer=0.20, backend="nemo"),
            run("w1", "aaaa", cer=0.05, zero_shot_cer=0.6, backend="whisper_lora"),
            run("w2", "bbbb", cer=0.01, backend="whisper_lora"),  # other data: never compared with aaaa
            run("x", "aaaa", wer=0.1, backend="whisper_lora")]  # no CER: not scored
    rows = backend_comparison(runs)
    assert rows == [{"data": "aaaa", "nemo cer": 0.2, "nemo run": "/runs/asr/n2", "whisper_lora cer": 0.05,
                     "whisper_lora zero-shot cer": 0.6, "whisper_lora run": "/runs/asr/w1"}]
    assert backend_comparison(runs, data_fingerprint="bbbb")[0]["whisper_lora cer"] == 0.01
