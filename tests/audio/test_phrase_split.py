"""phrase-split on espeak sentences: 4 phrases -> whole + 4 clips, texts and cut points right."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.audio import read_audio, write_wav
from data_tools.manifest import ManifestEntry, read_manifest, write_manifest
from data_tools.phrase_split import choose_cuts, find_pauses, phrase_split, split_text
from data_tools.speech_synth import TTS_TEMPLATE
from data_tools.tts_clean import trim_silence

from .conftest import espeak_wav

SENTENCES = [TTS_TEMPLATE.format(greeting=g, name=n) for g, n in
             [("您好", "张伟"), ("上午好", "李秀英"), ("中午好", "王芳"), ("下午好", "杨晓东")]]


def _phrase_seconds(tmp_path, text: str) -> float:
    audio, sr = read_audio(espeak_wav(tmp_path / "phrase.wav", text, speed=150))
    return len(trim_silence(audio, sr)[0]) / sr


@pytest.fixture(scope="module")
def sentence_manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sentences")
    entries = []
    for i, text in enumerate(SENTENCES):
        path = espeak_wav(folder / f"s{i}.wav", text, speed=150)
        audio, sr = read_audio(path)
        entries.append(ManifestEntry(str(path), len(audio) / sr, text, "f2"))
    # A clip whose audio has no pauses (read without punctuation) but whose text has 4 phrases.
    flat = espeak_wav(folder / "flat.wav", "您好张伟欢迎回家二维码有效请您通过", speed=150)
    audio, sr = read_audio(flat)
    entries.append(ManifestEntry(str(flat), len(audio) / sr, SENTENCES[0], "f2"))
    return write_manifest(folder / "manifest.json", entries)


def test_split_text_drops_punctuation():
    assert split_text("上午好，张伟，欢迎回家，二维码有效请您通过。") == ["上午好", "张伟", "欢迎回家", "二维码有效请您通过"]
    assert split_text("你好大白请让我进入小区") == ["你好大白请让我进入小区"]


def test_four_phrase_sentences_give_five_samples_with_matching_texts(sentence_manifest, tmp_path):
    result = phrase_split(sentence_manifest, tmp_path / "out", workers=2)
    samples = read_manifest(result.manifest_path)
    assert result.split_clips == len(SENTENCES)
    wholes = [s for s in samples if s.extra["phrase_index"] == -1 and "flat" not in s.audio_filepath]
    assert sorted(w.text for w in wholes) == sorted(SENTENCES)
    for whole in wholes:
        pieces = [s for s in samples if s.extra.get("whole") == whole.audio_filepath]
        assert [p.text for p in pieces] == split_text(whole.text)  # 1 whole + 4 phrases = 5 samples
    # The flat reading has no pauses: left whole and reported.
    assert len(result.left_whole) == 1 and "flat.wav" in result.left_whole[0]["path"]
    assert "pauses" in result.left_whole[0]["reason"]
    assert result.samples == 5 * len(SENTENCES) + 1


def test_phrase_clips_last_as_long_as_the_phrase_spoken_alone(sentence_manifest, tmp_path):
    result = phrase_split(sentence_manifest, tmp_path / "out", workers=1)
    pieces = [s for s in read_manifest(result.manifest_path) if s.extra["phrase_index"] >= 0]
    for piece in pieces[:8]:
        alone = _phrase_seconds(tmp_path, piece.text)
        assert piece.duration == pytest.approx(alone, rel=0.3), piece.text


def test_find_pauses_on_tones_with_known_gaps():
    sr = 16000
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(int(0.4 * sr)) / sr)
    gap_short, gap_long = np.zeros(int(0.05 * sr)), np.zeros(int(0.3 * sr))
    audio = np.concatenate([gap_long, tone, gap_long, tone, gap_short, tone, gap_long]).astype(np.float32)
    pauses = find_pauses(audio, sr)
    assert len(pauses) == 1  # edges and the 50 ms gap are not phrase breaks
    start, end = pauses[0]
    assert start == pytest.approx(0.7, abs=0.03) and end == pytest.approx(1.0, abs=0.03)


def test_choose_cuts_refuses_ambiguous_pauses():
    phrases = ["上午好", "张伟"]
    assert choose_cuts([(1.0, 1.3)], phrases, 2.0)[0] == [1.15]
    cuts, why = choose_cuts([(0.5, 0.7), (1.0, 1.2)], phrases, 2.0)
    assert cuts == [] and "no clear" in why
    cuts, why = choose_cuts([], phrases, 2.0)
    assert cuts == [] and "found 0 pauses" in why


def test_unreadable_clip_is_reported_not_fatal(tmp_path):
    good = tmp_path / "g.wav"
    write_wav(good, np.zeros(100, dtype=np.float32) + 0.1, 16000)
    manifest = write_manifest(tmp_path / "m.json", [ManifestEntry(str(tmp_path / "gone.wav"), 1.0, "你好，大白"),
                                                   ManifestEntry(str(good), 0.01, "你好")])
    result = phrase_split(manifest, tmp_path / "out", workers=1)
    assert result.samples == 1 and "gone.wav" in result.left_whole[0]["path"]
