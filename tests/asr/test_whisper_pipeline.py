"""`hackathon run asr backend=whisper_lora` end to end on a tiny corpus (slow; run under the CPU flock).

One real run of Whisper-base (packaged:base) on 15 espeak clips: kill -9 during the train stage once
the engine (hackathon/core/training.py) wrote its first last.ckpt, the same command resumes from that
checkpoint and finishes; then the exports (merged transformers
model, CTranslate2 int8 through faster-whisper) transcribe the held-out split exactly like the adapter
model did, checkpoint averaging reports CER before/after, and `hackathon asr transcribe` reads the
CTranslate2 export.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hackathon.core.atomic import read_json

pytestmark = pytest.mark.slow

PHRASES = (0, 3, 6)
VOICES = {"train": ("f1", "m1", "f2"), "val": ("f4",), "test": ("f5",)}


def tiny_corpus(folder: Path) -> Path:
    """{train,val,test}_manifest.json over 3 phrases: 9 train clips, 3 val, 3 test (unseen voices)."""
    from data_tools.manifest import read_manifest, write_manifest
    from data_tools.speech_synth import synth_speech

    root = Path(synth_speech("asr", folder / "demo", seed=0, renditions=1, noise=False)["out_dir"])
    entries = [e for s in ("train", "val", "test") for e in read_manifest(root / f"{s}_manifest.json")]
    for split, voices in VOICES.items():
        chosen = [e for e in entries if e.speaker in voices and int(Path(e.audio_filepath).stem.split("_p")[1][:2]) in PHRASES]
        assert len(chosen) == len(voices) * len(PHRASES)
        write_manifest(folder / f"{split}_manifest.json", chosen)
    return folder


def command(run_dir: Path, source: Path) -> list[str]:
    exe = Path(sys.executable).parent / "hackathon"
    return [str(exe), "run", "asr", "backend=whisper_lora", f"data.source={source}", "trainer.max_epochs=2",
            "trainer.batch_size=3", "evaluate.batch_size=3", "export.average_best_k=2", "trainer.warmup_steps=2",
            "--run-dir", str(run_dir)]


def test_kill_resume_exports_agree(tmp_path):
    import torch

    source = tiny_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command(run_dir, source), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    last = run_dir / "checkpoints" / "whisper" / "last.ckpt"
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), f"no checkpoint before the run ended:\n{proc.stdout.read() if proc.poll() is not None else ''}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    meta = read_json(run_dir / "meta.json")
    assert meta["stages"]["train"]["status"] == "running"  # killed inside the train stage
    assert read_json(run_dir / "metrics.json")["zero_shot_cer"] > 0  # the baseline was recorded first

    out = subprocess.run(command(run_dir, source), env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resume train" in out.stdout  # the runner's console line
    meta = read_json(run_dir / "meta.json")
    train = meta["stages"]["train"]
    assert train["status"] == "done" and train["resumed"]
    assert train["resumed_from"]["checkpoint"] == str(last) and train["resumed_from"]["epochs_done"] >= 1
    assert [h["epoch"] for h in train["history"]] == [1, 2]  # epochs before the kill kept, none redone
    assert meta["stages"]["model"]["status"] == "done" and "resume model" not in out.stdout  # not re-encoded
    ckpts = sorted(p.name for p in last.parent.glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len([n for n in ckpts if n.startswith("best-")]) == 2, ckpts  # average_best_k=2
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert state and all("lora_" in k for k in state), list(state)[:5]  # adapter weights only: small checkpoints

    metrics = read_json(run_dir / "metrics.json")
    assert metrics["export_merged_agreement"] == 1.0, metrics
    assert metrics["export_ct2_agreement"] == 1.0, metrics
    assert metrics["average_best_k"] == 2 and "cer_after_average" in metrics and "cer_before_average" in metrics
    assert 0 <= metrics["cer"] <= 1 and metrics["cer"] == metrics["export_merged_cer"]
    assert metrics["cer"] < metrics["zero_shot_cer"] and metrics["train_cut_by_time"] is False
    for folder in ("adapter", "merged", "ct2", "averaged"):
        assert any((run_dir / "export" / folder).iterdir()), folder
    assets = read_json(run_dir / "report_assets.json")
    assert assets["tables"][0]["title"] == "Test scores"

    predictions = {json.loads(line)["audio_filepath"]: json.loads(line)["pred_text"]
                   for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()}
    tr = subprocess.run([str(Path(sys.executable).parent / "hackathon"), "asr", "transcribe", "--json",
                         str(run_dir / "export" / "ct2"), str(source / "test_manifest.json")],
                        env=env, capture_output=True, text=True, timeout=300)
    assert tr.returncode == 0, tr.stderr[-2000:]
    results = json.loads(tr.stdout)["results"]
    assert {r["audio_filepath"]: r["pred_text"] for r in results} == predictions
