"""Fixtures for the audio tools: real espeak-ng speech, and a recordings folder with every bad-input kind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data_tools.audio import read_audio, write_wav

GOOD_PHRASES = {
    "good_wav": "你好大白请让我进入小区",
    "good_stereo_48k": "请帮我开一下门",
    "good_mp3": "我是这里的业主",
    "good_m4a": "我来送快递",
    "good_flac_24bit": "我住在三号楼",
    "good_ogg": "谢谢你大白",
}

# file in the folder -> the rejection kind prepare-audio must report for it
BAD_KINDS = {
    "zero_byte.wav": "zero_byte",
    "truncated.wav": "truncated",
    "not_audio.wav": "not_audio",
    "notes.pdf": "not_audio",
    "silent.wav": "silent",
    "clipped.wav": "clipped",
    "too_short.wav": "too_short",
    "too_long.wav": "too_long",
    "no_transcript.wav": "missing_transcript",
    "blank_text.wav": "empty_transcript",
    "emoji_text.wav": "out_of_vocabulary",
    "gbk_text.wav": "not_utf8",
    "good_wav_copy.wav": "duplicate",
    "broken_link.wav": "unreadable_path",
}


def espeak_wav(path: Path, text: str, voice: str = "f2", speed: int = 160) -> Path:
    """Real Mandarin speech from espeak-ng (22.05 kHz mono 16-bit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", f"cmn-latn-pinyin+{voice}", "-s", str(speed), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


def _ffmpeg(src: Path, dst: Path, *args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *args, str(dst)], check=True)


@pytest.fixture(scope="session")
def recordings(tmp_path_factory) -> Path:
    """A folder like the team's: good clips in six formats + one of each bad kind, transcripts in a CSV,
    per-clip .txt files, and a GBK-encoded .txt."""
    root = tmp_path_factory.mktemp("recordings")
    src = root / "src"
    scratch = root / "scratch"
    src.mkdir()
    base = {name: espeak_wav(scratch / f"{name}.wav", text) for name, text in GOOD_PHRASES.items()}

    shutil.copy(base["good_wav"], src / "good_wav.wav")
    audio, sr = read_audio(base["good_stereo_48k"])
    from data_tools.audio import resample

    stereo = resample(np.stack([audio, 0.8 * audio], axis=1), sr, 48000)
    write_wav(src / "good_stereo_48k.wav", stereo, 48000)
    _ffmpeg(base["good_mp3"], src / "good_mp3.mp3", "-ar", "44100")
    _ffmpeg(base["good_m4a"], src / "good_m4a.m4a", "-ar", "16000", "-c:a", "aac")
    _ffmpeg(base["good_flac_24bit"], src / "good_flac_24bit.flac", "-sample_fmt", "s32", "-ar", "44100")
    _ffmpeg(base["good_ogg"], src / "good_ogg.ogg", "-c:a", "libvorbis")

    (src / "zero_byte.wav").write_bytes(b"")
    full = base["good_wav"].read_bytes()
    (src / "truncated.wav").write_bytes(full[: len(full) // 3])
    (src / "not_audio.wav").write_text("this is a text file renamed to .wav\n")
    (src / "notes.pdf").write_bytes(b"%PDF-1.4 not audio")
    write_wav(src / "silent.wav", np.zeros(16000 * 2, dtype=np.float32), 16000)
    loud = np.clip(audio * 20, -1, 1)
    write_wav(src / "clipped.wav", loud, sr)
    write_wav(src / "too_short.wav", audio[: int(0.1 * sr)] + 0.0, sr)
    write_wav(src / "too_long.wav", np.tile(audio, 12), sr)  # ~30 s of speech
    shutil.copy(base["good_wav"], src / "no_transcript.wav")
    espeak_wav(src / "blank_text.wav", "请问物业在哪里")
    espeak_wav(src / "emoji_text.wav", "外卖放在门口就好")
    espeak_wav(src / "gbk_text.wav", "我忘记带门禁卡了")
    (src / "gbk_text.txt").write_bytes("我忘记带门禁卡了".encode("gbk"))
    shutil.copy(base["good_wav"], src / "good_wav_copy.wav")
    os.symlink(root / "does_not_exist.wav", src / "broken_link.wav")

    # Transcripts: a CSV for most clips, a .txt next to one clip (good_ogg), GBK .txt above.
    rows = ["file,text,speaker"]
    for name, text in GOOD_PHRASES.items():
        if name != "good_ogg":
            rows.append(f"{name},{text},spk_{name[-3:]}")
    rows += ["zero_byte.wav,你好", "truncated.wav,你好大白", "not_audio.wav,你好", "silent.wav,安静",
             "clipped.wav,请帮我开一下门", "too_short.wav,你", "too_long.wav,很长的一段话",
             "blank_text.wav,   ", "emoji_text.wav,外卖放在门口就好😀", "good_wav_copy.wav,你好大白请让我进入小区",
             "broken_link.wav,你好"]
    (src / "transcripts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (src / "good_ogg.txt").write_text(GOOD_PHRASES["good_ogg"] + "\n", encoding="utf-8")
    return src
