"""Demo speech: valid NeMo manifests, held-out voices/names, deterministic, cached."""

from __future__ import annotations

import hashlib

import pytest
import soundfile as sf

from data_tools.manifest import read_manifest
from data_tools.speech_synth import ASR_PHRASES, TTS_GREETINGS, TTS_NAMES, ensure_demo_speech, synth_speech
from hackathon.core.errors import HackathonError


def _manifests(out_dir):
    return {s: read_manifest(out_dir / f"{s}_manifest.json") for s in ("train", "val", "test")}


def _digest(out_dir) -> str:
    h = hashlib.sha256()
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and path.name != "synth_stamp.json":  # the stamp holds the elapsed time
            h.update(path.relative_to(out_dir).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def asr_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("asr_demo")
    return out, synth_speech("asr", out, seed=0, renditions=1)


def test_asr_demo_manifests_are_valid_16k_mono_with_true_durations(asr_demo):
    out, summary = asr_demo
    splits = _manifests(out)
    assert summary["sample_rate"] == 16000
    for entries in splits.values():
        assert entries
        for e in entries:
            info = sf.info(e.audio_filepath)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert e.duration == pytest.approx(info.frames / 16000, abs=1e-3)
            assert e.text in ASR_PHRASES
    assert any(e.text == "你好大白请让我进入小区" for e in splits["train"])
    train_voices = {e.speaker for e in splits["train"]}
    held_out = {e.speaker for e in splits["val"] + splits["test"]}
    assert len(train_voices | held_out) >= 8
    assert not train_voices & held_out, "test/val voices must never speak in train"


def test_same_seed_same_corpus_other_seed_differs(asr_demo, tmp_path):
    out, _ = asr_demo
    again = tmp_path / "again"
    synth_speech("asr", again, seed=0, renditions=1)
    # Paths inside manifests differ by folder; compare the audio bytes and texts instead.
    first = [(e.text, e.speaker, open(e.audio_filepath, "rb").read()) for e in _manifests(out)["test"]]
    second = [(e.text, e.speaker, open(e.audio_filepath, "rb").read()) for e in _manifests(again)["test"]]
    assert first == second
    other = tmp_path / "other"
    synth_speech("asr", other, seed=1, renditions=1)
    third = [open(e.audio_filepath, "rb").read() for e in _manifests(other)["test"]]
    assert third != [b for _, _, b in first]


def test_tts_demo_one_voice_held_out_names(tmp_path):
    summary = synth_speech("tts", tmp_path / "tts", seed=0)
    splits = _manifests(tmp_path / "tts")
    assert summary["sample_rate"] == 22050 and len(TTS_NAMES) >= 30
    assert sf.info(splits["train"][0].audio_filepath).samplerate == 22050
    names = {split: {n for n in TTS_NAMES for e in entries if f"，{n}，" in e.text} for split, entries in splits.items()}
    assert names["test"] and not names["test"] & names["train"]
    assert not names["val"] & names["train"]
    greetings = {e.text.split("，")[0] for e in splits["train"]}
    assert greetings == set(TTS_GREETINGS) and {"上午好", "中午好", "下午好"} <= greetings
    assert all(e.text.endswith("，欢迎回家，二维码有效请您通过。") for e in splits["test"])


def test_refuses_a_folder_the_user_filled(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(HackathonError, match="not made by synth-speech"):
        synth_speech("asr", tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_ensure_demo_speech_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HACKATHON_DEMO_DATA", str(tmp_path))
    out = ensure_demo_speech("asr", renditions=1)
    assert out == tmp_path / "asr"
    stamp_mtime = (out / "synth_stamp.json").stat().st_mtime_ns
    assert ensure_demo_speech("asr", renditions=1) == out
    assert (out / "synth_stamp.json").stat().st_mtime_ns == stamp_mtime  # reused, not regenerated
    ensure_demo_speech("asr", seed=3, renditions=1)  # another seed: regenerated in place
    assert (out / "synth_stamp.json").stat().st_mtime_ns != stamp_mtime
