"""Tiny espeak-ng corpora shared by the TTS tests (22.05 kHz as espeak speaks, and a 44.1 kHz one with
high-band content above 11.025 kHz mixed in with sox, as real 44.1 kHz recordings have)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from data_tools.audio import read_audio
from data_tools.manifest import ManifestEntry, write_manifest

TEMPLATE = "{greeting}，{name}，欢迎回家，二维码有效请您通过。"
SPLIT_NAMES = {"train": ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆"], "val": ["赵磊"], "test": ["黄丽", "周杰"]}

# A FastPitch small enough to train a few steps in seconds on the CPU.
TINY_FASTPITCH = [
    "fastpitch.model_overrides.model.symbols_embedding_dim=32",
    "fastpitch.model_overrides.model.input_fft.n_layer=1",
    "fastpitch.model_overrides.model.output_fft.n_layer=1",
    "fastpitch.model_overrides.model.input_fft.d_inner=64",
    "fastpitch.model_overrides.model.output_fft.d_inner=64",
    "fastpitch.model_overrides.model.duration_predictor.filter_size=32",
    "fastpitch.model_overrides.model.pitch_predictor.filter_size=32",
    "fastpitch.trainer.batch_size=4",
    "sup_data.pitch_fmax=600",
]


def espeak(path: Path, text: str, high_band: bool = False) -> ManifestEntry:
    """espeak-ng speech at 22.05 kHz; with high_band, upsampled to 44.1 kHz and mixed with a quiet 12-16 kHz
    chirp + 14 kHz tone (sox), so the clip has energy where a 22.05 kHz pipeline cannot reach."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".espeak.wav") if high_band else path
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin+f2", "-s", "170", "-w", str(raw), text],
                   check=True, capture_output=True)
    if high_band:
        audio, sr = read_audio(raw)
        seconds = f"{len(audio) / sr:.3f}"
        up, band = path.with_suffix(".up.wav"), path.with_suffix(".band.wav")
        subprocess.run(["sox", str(raw), "-r", "44100", "-c", "1", str(up)], check=True, capture_output=True)
        subprocess.run(["sox", "-n", "-r", "44100", "-c", "1", str(band), "synth", seconds, "sine", "12000-16000",
                        "sine", "14000", "vol", "0.05"], check=True, capture_output=True)
        subprocess.run(["sox", "-m", str(up), str(band), str(path)], check=True, capture_output=True)
        for p in (raw, up, band):
            p.unlink()
    audio, sr = read_audio(path)
    return ManifestEntry(str(path), len(audio) / sr, text)


def make_corpus(root: Path, high_band: bool = False) -> Path:
    for split, names in SPLIT_NAMES.items():
        entries = [espeak(root / "wavs" / split / f"{i}.wav", TEMPLATE.format(greeting="您好", name=n), high_band)
                   for i, n in enumerate(names)]
        write_manifest(root / f"{split}_manifest.json", entries)
    return root


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("tts_corpus"))


@pytest.fixture(scope="session")
def corpus_44k(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("tts_corpus_44k"), high_band=True)
