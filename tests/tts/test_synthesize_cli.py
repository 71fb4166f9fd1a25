"""`hackathon tts synthesize` without a model: --dry-run, greeting by time of day, template checks."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pytest

from hackathon.core.errors import HackathonError


@pytest.mark.parametrize("hour,greeting", [(6, "上午好"), (10, "上午好"), (11, "中午好"), (12, "中午好"),
                                           (13, "下午好"), (17, "下午好"), (18, "晚上好"), (2, "晚上好")])
def test_greeting_follows_the_time_of_day(hour, greeting):
    from tasks.tts.synthesize import greeting_for

    assert greeting_for(dt.datetime(2026, 11, 29, hour, 30)) == greeting


def test_template_fills_greeting_and_name_and_refuses_unknown_fields():
    from tasks.tts.synthesize import fill_template

    assert fill_template("{greeting}，{name}，欢迎回家。", "王芳", "下午好") == "下午好，王芳，欢迎回家。"
    with pytest.raises(HackathonError, match="unknown field"):
        fill_template("{greting}，{name}", "王芳", "下午好")
    with pytest.raises(HackathonError, match="no {name}"):
        fill_template("{greeting}，欢迎回家", "王芳", "下午好")


def test_dry_run_prints_normalised_text_and_phonemes_without_a_model(hackathon_bin, tmp_path):
    env_runs = {"HACKATHON_RUNS": str(tmp_path / "no-runs")}  # no model anywhere: dry run must not need one
    said = subprocess.run([hackathon_bin, "tts", "synthesize", "--dry-run", "--template", "{greeting}，{name}，3号楼",
                           "--greeting", "下午好", "A座王芳"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env_runs})
    assert said.returncode == 0, said.stderr[-2000:]
    out = " ".join(said.stdout.split())
    assert "normalised: 下午好，诶座王芳，三号楼" in out
    assert "EI #1 Z UO #4 UANG #2 F ANG #1" in out
    refused = subprocess.run([hackathon_bin, "tts", "synthesize", "--dry-run", "您好☺"], capture_output=True,
                             text=True, timeout=300, env={**os.environ, **env_runs})
    assert refused.returncode != 0 and "'☺'" in refused.stdout + refused.stderr
