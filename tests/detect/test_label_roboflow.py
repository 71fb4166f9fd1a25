"""`hackathon label` (labelImg from a Python <= 3.9 env) and `detect roboflow-download` up to the network call."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from data_tools.detection import labelimg, roboflow_download
from hackathon.core.errors import HackathonError


def _fake_python(tmp_path: Path, version: str) -> Path:
    """A stand-in interpreter that prints `version` (what interpreter_version asks for)."""
    py = tmp_path / f"python{version}"
    py.write_text(f"#!/bin/sh\necho {version}\n")
    py.chmod(0o755)
    return py


def _fake_labelimg(tmp_path: Path, version: str) -> Path:
    exe = tmp_path / f"env{version}" / "bin" / "labelImg"
    exe.parent.mkdir(parents=True)
    exe.write_text(f"#!{_fake_python(tmp_path, version)}\n# console script\n")
    exe.chmod(0o755)
    return exe


def test_python_310_labelimg_is_skipped_and_39_is_used(tmp_path):
    new, old = _fake_labelimg(tmp_path, "3.12"), _fake_labelimg(tmp_path, "3.9")
    exe, version, notes = labelimg.find_labelimg([new, old])
    assert exe == old and version == (3, 9)
    assert "crashes" in notes[0] and "3.12" in notes[0]


def test_no_usable_labelimg_explains_how_to_make_one(tmp_path):
    with pytest.raises(HackathonError) as exc:
        labelimg.find_labelimg([_fake_labelimg(tmp_path, "3.11"), tmp_path / "missing"])
    assert "pyenv install 3.9" in exc.value.fix and "labelImg==1.8.6" in exc.value.fix


def test_label_command_uses_canonical_classes_and_voc_save_dir(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    exe = _fake_labelimg(tmp_path, "3.9")
    argv, _ = labelimg.label_command(images, tmp_path / "xml", executable=exe)
    assert argv == [str(exe), str(images.resolve()), str((tmp_path / "xml" / "classes.txt").resolve()), str((tmp_path / "xml").resolve())]
    assert (tmp_path / "xml" / "classes.txt").read_text().split() == ["with_mask", "without_mask", "mask_weared_incorrect"]


def test_existing_other_classes_file_is_not_overwritten(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    with pytest.raises(HackathonError, match="not overwriting"):
        labelimg.label_command(tmp_path, executable=_fake_labelimg(tmp_path, "3.9"))
    assert (tmp_path / "classes.txt").read_text() == "cat\ndog\n"


def test_real_labelimg_here_runs_on_python_39_when_installed():
    """On this machine a py3.9 labelImg exists (made by `hackathon label --setup`); when it is there,
    the finder must pick it and report its Python."""
    try:
        exe, version, _ = labelimg.find_labelimg()
    except HackathonError as exc:
        assert "pyenv install 3.9" in exc.fix
        return
    assert version < (3, 10) and exe.name == "labelImg"


# ----------------------------------------------------------------------------- roboflow

def test_roboflow_needs_key_from_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ROBOFLOW_API_KEY", raising=False)
    with pytest.raises(HackathonError, match="ROBOFLOW_API_KEY"):
        roboflow_download.download("ws", "proj", 1, "coco", tmp_path / "out")


def test_roboflow_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBOFLOW_API_KEY", "secret-key-123")
    monkeypatch.setitem(sys.modules, "roboflow", None)  # import roboflow -> ImportError
    with pytest.raises(HackathonError) as exc:
        roboflow_download.download("ws", "proj", 1, "coco", tmp_path / "out")
    assert "pip install" in exc.value.fix


def _fake_roboflow(download):
    class Version:
        def download(self, fmt, location, overwrite=True):
            return download(fmt, location)

    class Project:
        def version(self, n):
            return Version()

    class Workspace:
        def project(self, name):
            return Project()

    class Roboflow:
        def __init__(self, api_key):
            self.api_key = api_key

        def workspace(self, name):
            return Workspace()

    return types.SimpleNamespace(Roboflow=Roboflow)


def test_roboflow_offline_is_a_clear_error_without_the_key(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("ROBOFLOW_API_KEY", "secret-key-123")

    def offline(fmt, location):
        # what the real client does first: reach api.roboflow.com (unreachable here)
        try:
            socket.create_connection(("api.roboflow.com", 443), timeout=3)
        except OSError as exc:
            raise ConnectionError(f"Max retries exceeded with url /secret-key-123: {exc}")
        raise ConnectionError("connection refused")

    monkeypatch.setitem(sys.modules, "roboflow", _fake_roboflow(offline))
    with pytest.raises(HackathonError) as exc:
        roboflow_download.download("ws", "proj", 1, "voc", tmp_path / "out")
    assert "not reachable" in exc.value.fix and "secret-key-123" not in str(exc.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written


def test_roboflow_download_lands_atomically_and_never_overwrites(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBOFLOW_API_KEY", "k" * 8)

    def ok(fmt, location):
        Path(location, "train").mkdir()
        Path(location, "train", "_annotations.coco.json").write_text("{}")

    monkeypatch.setitem(sys.modules, "roboflow", _fake_roboflow(ok))
    out = roboflow_download.download("ws", "proj", 2, "coco", tmp_path / "out")
    assert (out / "train" / "_annotations.coco.json").exists()
    with pytest.raises(HackathonError, match="not overwriting"):
        roboflow_download.download("ws", "proj", 2, "coco", tmp_path / "out")
    assert os.listdir(out) == ["train"]
