"""CLI start-up stays light; doctor reports every check with a fix; `run` refuses bad input clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "nemo", "torchvision", "onnxruntime", "lightning", "pycocotools", "docker")


def test_cli_import_pulls_no_heavy_module():
    code = ("import sys, hackathon.cli; heavy=[m for m in %r if m in sys.modules]; print(','.join(heavy))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"hackathon.cli imports heavy modules at start-up: {out}"


def test_help_lists_commands(hackathon_bin):
    out = subprocess.run([hackathon_bin, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "doctor", "ngc", "data", "asr", "tts", "detect"):
        assert cmd in out


@pytest.mark.parametrize("daemon", ["as found", "unreachable"])
def test_doctor_json_lists_checks_with_fixes(hackathon_bin, daemon, tmp_path):
    """The same checks are listed whether or not a docker daemon answers (a fresh machine has none)."""
    env = dict(os.environ)
    if daemon == "unreachable":
        env["DOCKER_HOST"] = f"unix://{tmp_path}/no-daemon.sock"
    proc = subprocess.run([hackathon_bin, "doctor", "--json"], capture_output=True, text=True, timeout=300, env=env)
    checks = json.loads(proc.stdout)
    names = {c["name"] for c in checks}
    for expected in ("python", "ffmpeg", "sox", "espeak-ng", "docker client", "docker daemon", "gpus",
                     "ngc login", "disk", "python packages", "nvidia container runtime"):
        assert expected in names, expected
    for c in checks:
        assert c["status"] in ("ok", "warn", "fail")
        if c["status"] != "ok":
            assert c["fix"], f"check {c['name']} is {c['status']} without a fix"
    failed_for_asr = [c for c in checks if c["status"] == "fail" and ("asr" in c["needed_by"] or not c["needed_by"])]
    if daemon == "unreachable":
        by_name = {c["name"]: c for c in checks}
        assert by_name["docker daemon"]["status"] == "fail" and "not running" in by_name["docker daemon"]["detail"]
        assert "detect" in by_name["docker daemon"]["needed_by"] and "asr" not in by_name["docker daemon"]["needed_by"]
    asr = subprocess.run([hackathon_bin, "doctor", "--json", "--task", "asr"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert asr.returncode == (1 if failed_for_asr else 0)


def test_run_unknown_task_and_bad_override(hackathon_bin):
    proc = subprocess.run([hackathon_bin, "run", "nosuch"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Unknown task" in proc.stderr
    proc = subprocess.run([hackathon_bin, "run", "asr", "trainer.no_such_key=1"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Unknown config key" in proc.stderr
