"""CLI start-up stays light; doctor reports every check with a fix; `run` refuses bad input clearly."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "nemo", "torchvision", "onnxruntime", "lightning", "pycocotools", "docker")


def test_cli_import_pulls_no_heavy_module():
    code = ("import sys, hackathon.cli; heavy=[m for m in %r if m in sys.modules]; print(','.join(heavy))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"hackathon.cli imports heavy modules at start-up: {out}"


def test_help_lists_commands(hackathon_bin):
    out = subprocess.run([hackathon_bin, "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("run", "doctor", "ngc", "data", "asr", "tts", "detect"):
        assert cmd in out


def test_doctor_json_lists_checks_with_fixes(hackathon_bin):
    proc = subprocess.run([hackathon_bin, "doctor", "--json"], capture_output=True, text=True, timeout=300)
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
    asr = subprocess.run([hackathon_bin, "doctor", "--json", "--task", "asr"], capture_output=True, text=True, timeout=300)
    assert asr.returncode == (1 if failed_for_asr else 0)


def test_run_unknown_task_and_bad_override(hackathon_bin):
    proc = subprocess.run([hackathon_bin, "run", "nosuch"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Unknown task" in proc.stderr
    proc = subprocess.run([hackathon_bin, "run", "asr", "trainer.no_such_key=1"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Unknown config key" in proc.stderr
