"""The whole TTS pipeline on a tiny espeak-ng corpus: kill -9 during FastPitch training, the same command
resumes; HiFiGAN pre-train + fine-tune on FastPitch mels; metrics; synthesis of an unseen name via the CLI.

Run under `flock /tmp/hackathon-train.lock` like every training test (see the brief).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from data_tools.audio import read_audio
from tests.tts.conftest import TEMPLATE, TINY_FASTPITCH

# Tiny everything: the point is the mechanics (resume, stages, files), not the quality.
OVERRIDES = [
    *TINY_FASTPITCH,
    "fastpitch.trainer.max_epochs=8",
    "fastpitch.trainer.max_time=null",
    "fastpitch.trainer.check_val_every_n_epoch=4",
    "hifigan.enabled=true",
    "hifigan.trainer.batch_size=2",
    "hifigan.trainer.pretrain_steps=1",
    "hifigan.trainer.finetune_steps=1",
    "synthesize.max_sentences=2",
    "griffin_lim.n_iter=8",
    "evaluate.asr_overrides=[trainer.max_epochs=1,export.onnx=false,trainer.batch_size=4]",
]


def hackathon(*args: str) -> list[str]:
    exe = Path(os.sys.executable).parent / "hackathon"
    return [str(exe), *args]


def loadable(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and zipfile.is_zipfile(path)


@pytest.mark.slow
def test_kill_during_fastpitch_then_same_command_resumes_and_speaks(corpus, tmp_path):
    run_dir = tmp_path / "run"
    cmd = hackathon("run", "tts", "--run-dir", str(run_dir), f"data.source={corpus}", *OVERRIDES)
    last = run_dir / "checkpoints" / "fastpitch" / "last.ckpt"

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not loadable(last) and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, "the run ended before FastPitch wrote its first checkpoint"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["stages"]["fastpitch"]["status"] == "running"  # killed mid-stage

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    meta = json.loads((run_dir / "meta.json").read_text())
    fastpitch = meta["stages"]["fastpitch"]
    assert fastpitch["resumed"] and fastpitch["resumed_from"]["epochs_done"] >= 1
    assert fastpitch["global_step"] > fastpitch["resumed_from"]["global_step"]  # went on from there

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "pesq_wb", "asr_cer", "name_exact_rate",
                "copy_dnsmos_ovrl", "copy_pesq_wb", "vocoder", "pesq_alignment"):
        assert metrics.get(key) is not None, key
    assert metrics["vocoder"] == "griffin_lim" and metrics["n_sentences"] == 2
    assets = json.loads((run_dir / "report_assets.json").read_text())
    assert all((run_dir / a["path"]).is_file() for a in assets["audio"] + assets["images"])
    assert (run_dir / "models" / "hifigan.nemo").is_file()
    mels = [json.loads(line) for line in (run_dir / "mels" / "train.json").read_text().splitlines()]
    assert len({Path(m["mel_filepath"]).name for m in mels}) == len(mels)  # unique names

    # ONNX export: checked against NeMo (mel, HiFiGAN waveform), and the predictor `serve` runs speaks
    # like the NeMo synthesizer; unmappable text is refused naming the character.
    check = json.loads((run_dir / "export" / "export_check.json").read_text())
    assert check["passed"] and check["vocoder_exported"] and check["n_inputs"] == 2
    assert check["agreement"] == {"tokens": "2/2", "mel_frames": "2/2", "waveform_samples": "2/2"}
    assert check["max_abs_diff"]["mel"] <= check["tolerances"]["mel"] == 1e-2
    assert check["max_abs_diff"]["waveform"] <= check["tolerances"]["waveform"] == 1e-3
    assert metrics["tts_export_mel_max_abs_diff"] == check["max_abs_diff"]["mel"]
    assert metrics["tts_export_waveform_max_abs_diff"] == check["max_abs_diff"]["waveform"]
    assert any(t["title"].startswith("Export parity") for t in assets["tables"])  # kept by the score stage
    check_predictor_matches_nemo(run_dir)

    # A name never seen in training, at 44.1 kHz, with both vocoders.
    for vocoder in ("griffin_lim", "hifigan"):
        out = tmp_path / f"unseen_{vocoder}.wav"
        said = subprocess.run(hackathon("tts", "synthesize", "您好，欧阳娜娜，欢迎回家。", "-o", str(out), "--model",
                                        str(run_dir), "--rate", "44100", "--vocoder", vocoder),
                              capture_output=True, text=True, timeout=300)
        assert said.returncode == 0, said.stderr[-2000:]
        audio, sr = read_audio(out)
        assert sr == 44100 and len(audio) / sr > 0.5 and abs(audio).max() > 0.1

    # Batch: a bad line is reported by its line number, the others are still spoken (digits are normalised).
    lines = tmp_path / "lines.txt"
    lines.write_text("您好，欧阳娜娜，欢迎回家。\n\n请到3号门☺。\n上午好，司马光，请到3号楼2单元。\n", encoding="utf-8")
    batch = subprocess.run(hackathon("tts", "synthesize", "--file", str(lines), "-o", str(tmp_path / "batch"),
                                     "--model", str(run_dir)), capture_output=True, text=True, timeout=300)
    assert batch.returncode == 0, batch.stderr[-2000:]
    report = json.loads((tmp_path / "batch" / "synthesis_report.json").read_text())
    assert [w["line"] for w in report["written"]] == [1, 4] and [f["line"] for f in report["failed"]] == [3]
    assert "'☺'" in report["failed"][0]["error"]
    assert sorted(p.name for p in (tmp_path / "batch").glob("*.wav")) == ["0001.wav", "0004.wav"]

    # Greeting set: one name per line into the template, greeting forced, index.csv beside the wavs.
    names = tmp_path / "names.txt"
    names.write_text("王芳\nTony王\n☺\n", encoding="utf-8")
    greet = subprocess.run(hackathon("tts", "synthesize", "--file", str(names), "-o", str(tmp_path / "greet"),
                                     "--template", TEMPLATE, "--greeting", "晚上好", "--model", str(run_dir)),
                           capture_output=True, text=True, timeout=300)
    assert greet.returncode == 0, greet.stderr[-2000:]
    with open(tmp_path / "greet" / "index.csv", encoding="utf-8") as f:
        index = list(csv.DictReader(f))
    assert [(r["line"], r["status"], r["wav"]) for r in index] == [("1", "ok", "0001.wav"), ("2", "ok", "0002.wav"),
                                                                  ("3", "failed", "")]
    assert index[0]["text"] == "晚上好，王芳，欢迎回家，二维码有效请您通过。" and index[1]["name"] == "Tony王"
    assert all((tmp_path / "greet" / r["wav"]).is_file() for r in index if r["wav"])

    refused = subprocess.run(hackathon("tts", "synthesize", "您好，☺号楼", "-o", str(tmp_path / "x.wav"), "--model",
                                       str(run_dir)), capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "'☺'" in refused.stderr and not (tmp_path / "x.wav").exists()


def check_predictor_matches_nemo(run_dir: Path) -> None:
    import numpy as np

    from hackathon.core.errors import HackathonError
    from tasks.tts.onnx_infer import load
    from tasks.tts.synthesize import Synthesizer

    text = "您好，欧阳娜娜，欢迎回家。"  # a name unseen in training
    predictor, synth = load(run_dir), Synthesizer(run_dir)
    assert predictor.vocoder_kind == synth.vocoder_kind == "griffin_lim" and predictor.sample_rate == synth.sample_rate
    assert predictor.tokens(text) == synth.model.parse(text, normalize=False)[0].tolist()
    audio, mel = predictor.synthesize(text), predictor.mel_of_tokens(predictor.tokens(text))
    reference, ref_mel = synth.speak(text)
    assert audio.dtype == np.float32 and mel.shape == ref_mel.shape and np.abs(mel - ref_mel).max() < 1e-2
    assert audio.shape == reference.shape and np.abs(audio - reference).max() < 1e-3  # same seeded Griffin-Lim (measured 4e-6)
    hifigan = load(run_dir, vocoder="hifigan").synthesize(text)
    assert hifigan.dtype == np.float32 and len(hifigan) > 0.5 * predictor.sample_rate and np.isfinite(hifigan).all()
    with pytest.raises(HackathonError, match="'☺'"):
        predictor.synthesize("您好，☺号楼")


def test_tts_predictor_without_export_says_how_to_make_it(tmp_path):
    from hackathon.core.errors import HackathonError
    from tasks.tts.onnx_infer import load

    with pytest.raises(HackathonError) as err:
        load(tmp_path)
    assert "fastpitch.onnx" in err.value.message and "--only export" in err.value.fix
