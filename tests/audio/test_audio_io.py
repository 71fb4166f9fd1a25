"""data_tools.audio: every format reads, writes are 16-bit and atomic, batches survive bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from data_tools.audio import (AudioReadError, audio_duration, convert_file, convert_many, read_audio, resample,
                              to_mono, write_wav)


@pytest.mark.parametrize("name", ["good_wav.wav", "good_stereo_48k.wav", "good_mp3.mp3", "good_m4a.m4a",
                                  "good_flac_24bit.flac", "good_ogg.ogg"])
def test_reads_every_format_as_float32(recordings, name):
    audio, sr = read_audio(recordings / name)
    assert audio.dtype == np.float32
    assert sr in (16000, 22050, 44100, 48000)
    assert 1.0 < len(audio) / sr < 5.0
    assert 0.05 < float(np.max(np.abs(audio))) <= 1.0


def test_stereo_comes_back_two_dimensional_and_mixes_down(recordings):
    audio, sr = read_audio(recordings / "good_stereo_48k.wav")
    assert sr == 48000 and audio.shape[1] == 2
    mono = to_mono(audio)
    assert mono.shape == (audio.shape[0],)
    np.testing.assert_allclose(mono, audio.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("name,kind", [("zero_byte.wav", "zero_byte"), ("not_audio.wav", "not_audio"),
                                       ("truncated.wav", "truncated"), ("broken_link.wav", "unreadable_path"),
                                       ("missing.wav", "unreadable_path")])
def test_bad_files_raise_errors_naming_the_file(recordings, name, kind):
    with pytest.raises(AudioReadError) as info:
        read_audio(recordings / name, check_truncation=True)
    assert info.value.kind == kind
    assert name in info.value.message and info.value.fix


def test_write_wav_is_16_bit_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "out" / "tone.wav"
    write_wav(path, 1.5 * np.sin(np.linspace(0, 100, 16000)).astype(np.float32), 16000)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert sorted(p.name for p in path.parent.iterdir()) == ["tone.wav"]
    audio, _ = read_audio(path)
    assert np.max(np.abs(audio)) <= 1.0  # clipped, not wrapped around


def test_resample_keeps_duration():
    audio = np.random.default_rng(0).standard_normal(44100).astype(np.float32) * 0.1
    assert len(resample(audio, 44100, 16000)) == 16000
    assert resample(audio, 16000, 16000) is audio or np.array_equal(resample(audio, 16000, 16000), audio)


def test_convert_file_and_batch_with_a_bad_file(recordings, tmp_path):
    outcome = convert_file(recordings / "good_mp3.mp3", tmp_path / "one.wav", 16000)
    assert outcome.ok and outcome.source_rate == 44100
    assert abs(audio_duration(tmp_path / "one.wav") - outcome.duration) < 1e-3
    pairs = [(recordings / n, tmp_path / f"{i}.wav") for i, n in enumerate(
        ["good_wav.wav", "not_audio.wav", "good_stereo_48k.wav", "good_m4a.m4a", "zero_byte.wav"])]
    outcomes = convert_many(pairs, 16000, workers=2)
    assert [o.ok for o in outcomes] == [True, False, True, True, False]
    assert "not_audio.wav" in outcomes[1].error and "zero_byte.wav" in outcomes[4].error
    for o in outcomes:
        if o.ok:
            info = sf.info(o.dst)
            assert (info.samplerate, info.channels) == (16000, 1)
