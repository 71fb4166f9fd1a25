"""End to end: fine-tune a local .nemo on a new character set; kill -9 during training, then resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hackathon.core.atomic import read_json
from tests.asr.conftest import tiny_spec

pytestmark = pytest.mark.slow

NEW_PHRASES = ("欢迎光临", "今天天气很好", "请出示健康码")  # characters the demo model has never seen
VOICES = ("f1", "m1", "f3", "m3")  # 4 speakers: the split keeps test speakers out of train


def espeak_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for voice in VOICES:
        for i, text in enumerate(NEW_PHRASES):
            wav = folder / f"{voice}_{i}.wav"
            subprocess.run(["espeak-ng", "-v", f"cmn-latn-pinyin+{voice}", "-w", str(wav), text], check=True)
            rows.append({"file": wav.name, "text": text, "speaker": voice})
    with open(folder / "transcripts.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "text", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_finetune_local_nemo_with_new_character_set(tiny_run, tmp_path):
    import torch

    from hackathon.core.runner import run_task
    from tasks.asr.model import restore_model

    source = espeak_corpus(tmp_path / "recordings")
    base_model = tiny_run / "export" / "asr_model.nemo"
    ctx = run_task("asr", [f"data.source={source}", f"model.init={base_model}", "trainer.max_epochs=1",
                           "data.split.val=0.25", "data.split.test=0.25", "export.onnx=false"],
                   spec=str(tiny_run / "config.yaml"), run_dir=tmp_path / "finetune", echo=lambda s: None)
    report = read_json(ctx.run_dir / "model" / "vocabulary.json")
    train_chars = {ch for line in (ctx.run_dir / "data" / "train_manifest.json").read_text(encoding="utf-8").splitlines()
                   for ch in __import__("json").loads(line)["text"]}
    assert report["changed"] and report["decoder_reinitialised"] and "local .nemo" in report["source"]
    assert set(report["vocabulary"]) == train_chars and "欢" in train_chars
    # encoder weights come from the .nemo (only the decoder was re-initialised)
    base, init = restore_model(base_model), restore_model(ctx.run_dir / "model" / "init.nemo")
    for (name, a), (_, b) in zip(base.encoder.state_dict().items(), init.encoder.state_dict().items()):
        assert torch.equal(a, b), name
    assert init.decoder.vocabulary == report["vocabulary"]
    metrics = read_json(ctx.run_dir / "metrics.json")
    assert metrics["n_utts"] == 3 and "cer" in metrics  # one held-out speaker x 3 phrases
    start = metrics["init"]["asr"]  # provenance: from that file, all but the re-made decoder loaded
    assert start["kind"] == "file" and start["source"] == str(base_model.resolve()) and start["new"] == ["decoder"]
    assert start["loaded"] == len(init.state_dict()) - len([k for k in init.state_dict() if k.startswith("decoder.")])
    assert read_json(ctx.run_dir / "meta.json")["stages"]["model"]["init"]["asr"] == start
    assert read_json(ctx.run_dir / "meta.json")["status"] == "done"


def _hackathon(spec: Path, run_dir: Path, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "hackathon"
    return subprocess.Popen([str(exe), "run", "asr", "--spec", str(spec), "--run-dir", str(run_dir)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())


def test_kill_9_during_training_then_same_command_resumes(asr_env, tmp_path):
    spec = tiny_spec(tmp_path / "resume.yaml", **{"trainer.max_epochs": 6, "export.onnx": False})
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "fit" / "last.ckpt"
    proc = _hackathon(spec, run_dir, tmp_path / "first.log")
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert last.exists(), (tmp_path / "first.log").read_text(errors="replace")[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, mid-training: no clean-up runs
    proc.wait()
    meta = read_json(run_dir / "meta.json")
    assert meta["stages"]["train"]["status"] == "running"  # the runner never got to record the end

    second = _hackathon(spec, run_dir, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text(errors="replace")[-3000:]
    train = read_json(run_dir / "meta.json")["stages"]["train"]
    assert train["status"] == "done" and train["attempts"] == 2 and train["resumed"] is True
    assert 1 <= train["resumed_from"]["epochs_done"] < 6
    assert train["resumed_from"]["checkpoint"] == str(last)
    assert train["fit_attempts"][0]["resumed_from"]["epochs_done"] == train["resumed_from"]["epochs_done"]
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["epochs"] == 6 and "cer" in metrics
    assert sorted(p.name for p in (run_dir / "logs" / "fit").iterdir()) == ["attempt-1", "attempt-2"]
    names = sorted(p.name for p in last.parent.glob("*.ckpt"))
    assert "last.ckpt" in names and Path(train["best_checkpoint"]).name in names
    # tiny_spec sets export.average_best_k=2: the best two stay for averaging, nothing older survives the resume
    assert len([n for n in names if n.startswith("best-")]) <= 2, names
