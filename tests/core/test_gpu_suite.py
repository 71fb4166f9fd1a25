"""bench/gpu_suite.sh, the GPU check, runs here as its CPU-sized dry run: every section (ASR ours vs
bare fit, FastPitch/HiFiGAN steps, SSD training steps, the torchrun launcher) produces numbers, and
bench/gpu_results.json (here: a temp file) has them. Slow: it trains tiny models (run under the CPU flock)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_suite_dry_run_produces_every_section(tmp_path):
    out = tmp_path / "gpu_results.json"
    t0 = time.time()
    run = subprocess.run([str(REPO / "bench" / "gpu_suite.sh"), "--dry-run", "--out", str(out)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    seconds = time.time() - t0
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["dry_run"] is True
    sections = results["sections"]
    assert set(sections) == {"asr", "tts", "ssd300", "torchrun"}
    assert not [name for name, v in sections.items() if "error" in v]
    asr = sections["asr"]
    assert asr["ours_utts_per_s"] > 0 and asr["bare_utts_per_s"] > 0 and asr["ratio_ours_over_bare"] > 0
    assert sections["tts"]["fastpitch"]["seconds_per_step"] > 0 and sections["tts"]["hifigan"]["seconds_per_step"] > 0
    fine = sections["tts"]["hifigan_finetune"]  # from an init .nemo: loaded, then fine-tuned
    assert fine["seconds_per_step"] > 0 and fine["loaded_tensors"] > 0
    assert sections["ssd300"]["it_per_s"] > 0
    assert sections["torchrun"]["status"] == "done" and sections["torchrun"]["world_sizes"] == [1]
    assert "HOOK whisper" in (REPO / "bench" / "gpu_suite.sh").read_text()
    print(f"gpu_suite dry run: {seconds:.0f} s")
