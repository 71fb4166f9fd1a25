"""Atomic writes: a kill -9 in the middle of writing leaves the old file whole, never a torn one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from hackathon.core.atomic import atomic_write_bytes, atomic_write_json, read_json

WRITER = r"""
import sys
from hackathon.core.atomic import atomic_path
target = sys.argv[1]
with atomic_path(target) as tmp:
    with open(tmp, "wb") as fh:
        for _ in range(400):              # ~400 MB, slow enough to be killed mid-way
            fh.write(b"N" * (1 << 20))
            fh.flush()
        print("written", flush=True)
"""


def test_kill_during_write_keeps_old_content(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_bytes(target, b"OLD")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline and not any(p.name.startswith(".metrics.json.") for p in tmp_path.iterdir()):
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"OLD"


def test_json_roundtrip_and_no_temp_left(tmp_path):
    target = tmp_path / "a" / "b.json"
    atomic_write_json(target, {"text": "你好大白"})
    assert read_json(target) == {"text": "你好大白"}
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_failed_write_leaves_target_untouched(tmp_path):
    from hackathon.core.atomic import atomic_path

    target = tmp_path / "keep.txt"
    target.write_text("precious")
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise ValueError("writer crashed")
    except ValueError:
        pass
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_new_files_get_the_umask_mode_and_existing_files_keep_theirs(tmp_path):
    """mkstemp's 0600 must not leak: teammates read each other's meta.json / metrics.json."""
    old = os.umask(0o002)
    try:
        fresh = atomic_write_json(tmp_path / "meta.json", {})
        assert fresh.stat().st_mode & 0o777 == 0o664
        kept = tmp_path / "private.json"
        kept.write_text("{}")
        kept.chmod(0o640)
        atomic_write_json(kept, {"a": 1})
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
