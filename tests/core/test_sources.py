"""One data.source resolver (hackathon.core.paths): `~` expanded, relative paths from the working directory,
for every task's prepare fingerprint; a TTS source written `~/folder` re-runs prepare when a clip is added."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from hackathon.core.paths import data_sources, user_path
from hackathon.core.runner import execute_stages, prepare_run


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "recordings").mkdir(parents=True)
    (tmp_path / "home" / "recordings" / "clip_000.wav").write_bytes(b"RIFF0000")
    return tmp_path / "home"


def test_user_path_and_data_sources(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert user_path("~/recordings") == home / "recordings"
    assert user_path("data/x") == tmp_path / "data" / "x"
    assert user_path("/abs/y") == user_path("/abs/y").absolute()
    assert data_sources(None) == data_sources("") == []
    assert data_sources(["~/recordings", "rel"]) == [home / "recordings", tmp_path / "rel"]


@pytest.mark.parametrize("task", ["asr", "tts", "detect"])
def test_every_task_fingerprints_the_real_folder(task, home, tmp_path):
    ctx = prepare_run(task, ["data.source=~/recordings"], run_dir=tmp_path / "run")
    prepare = importlib.import_module(f"tasks.{task}.pipeline").build_stages(ctx.cfg)[0]
    assert prepare.name == "prepare" and list(prepare.inputs(ctx)) == [home / "recordings"]


def test_tts_new_clip_in_home_folder_reruns_prepare(home, tmp_path):
    from tasks.tts.pipeline import build_stages

    ctx = prepare_run("tts", ["data.source=~/recordings"], run_dir=tmp_path / "run")
    calls = []
    real = build_stages(ctx.cfg)[0]  # the real prepare stage: its config keys and inputs, not its work
    prepare = dataclasses.replace(real, fn=lambda c: calls.append("prepare"))
    execute_stages(ctx, [prepare], echo=lambda s: None)
    execute_stages(ctx, [prepare], echo=lambda s: None)
    assert calls == ["prepare"]  # unchanged folder: skipped
    (home / "recordings" / "clip_001.wav").write_bytes(b"RIFF0001")
    execute_stages(ctx, [prepare], echo=lambda s: None)
    assert calls == ["prepare", "prepare"]
