"""A 44.1 kHz run end to end on the CPU (issue 15): prepare -> fastpitch -> hifigan (1+1 steps) -> synthesize
-> evaluate, on espeak speech upsampled to 44.1 kHz with a 12-16 kHz band mixed in. The output is native
44.1 kHz audio with content above 11.025 kHz, which a resampled 22.05 kHz model cannot have."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data_tools.audio import read_audio, to_mono
from tests.tts.conftest import TINY_FASTPITCH

pytestmark = pytest.mark.slow  # trains FastPitch + HiFiGAN a few steps; run under the CPU flock

NYQUIST_22K = 11025.0


def share_above(path: Path, cutoff: float = NYQUIST_22K) -> tuple[int, float]:
    from tasks.tts.evaluate import band_energy_fraction

    audio, sr = read_audio(path)
    return sr, band_energy_fraction(to_mono(audio), sr, cutoff)


def test_44k_run_trains_and_speaks_natively(corpus_44k, tmp_path, hackathon_bin):
    sr, share = share_above(next((corpus_44k / "wavs" / "train").glob("*.wav")))
    assert sr == 44100 and share > 1e-3  # the training audio has the band

    run_dir = tmp_path / "run"
    cmd = [hackathon_bin, "run", "tts", "--spec", "demo44k", "--run-dir", str(run_dir), f"data.source={corpus_44k}",
           *TINY_FASTPITCH, "fastpitch.trainer.max_steps=4", "fastpitch.trainer.check_val_every_n_epoch=2",
           "hifigan.enabled=true", "hifigan.trainer.batch_size=2", "hifigan.trainer.pretrain_steps=1", "hifigan.trainer.finetune_steps=1",
           "vocoder=hifigan", "synthesize.max_sentences=1", "griffin_lim.n_iter=4", "evaluate.asr_judge=false",
           f"sup_data.cache_dir={tmp_path / 'pitch'}", "sup_data.workers=1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=os.environ.copy())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["fastpitch_steps"] == 4 and metrics["fastpitch_cut_by_time"] is False
    assert metrics["synth_sample_rate"] == 44100 and metrics["vocoder"] == "hifigan"
    assert metrics["high_band_ratio_8k"] is not None and metrics["copy_high_band_ratio_8k"] is not None
    index = [json.loads(line) for line in (run_dir / "synth" / "index.jsonl").read_text().splitlines()]
    for kind in ("synth", "copy"):
        sr, share = share_above(run_dir / index[0][kind])
        assert sr == 44100 and share > 1e-4, (kind, share)
    from omegaconf import OmegaConf

    trained = OmegaConf.load(run_dir / "models" / "fastpitch_config.yaml")
    assert (trained.sample_rate, trained.n_window_stride, trained.n_fft) == (44100, 512, 2048)
    stats = json.loads((run_dir / "meta.json").read_text())["stages"]["sup_data"]["settings"]
    assert stats["frame_length"] == 2048  # pyin hop 512 = the mel hop

    for vocoder in ("hifigan", "griffin_lim"):
        out = tmp_path / f"out_{vocoder}.wav"
        said = subprocess.run([hackathon_bin, "tts", "synthesize", "下午好，A座3号楼，欢迎回家。", "-o", str(out),
                               "--model", str(run_dir), "--vocoder", vocoder, "--rate", "44100"],
                              capture_output=True, text=True, timeout=300, env=os.environ.copy())
        assert said.returncode == 0, said.stderr[-2000:]
        assert "44100 Hz native" in " ".join(said.stdout.split())
        sr, share = share_above(out)
        assert sr == 44100 and share > 1e-4, (vocoder, share)
        audio, _ = read_audio(out)
        assert len(audio) / sr > 0.05 and np.abs(audio).max() > 0.1  # 4 FastPitch steps: short, but real frames
