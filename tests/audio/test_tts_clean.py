"""TTS cleaning: silence trim, loudness normalisation, SNR estimate, rate-mismatch flag."""

from __future__ import annotations

import numpy as np
import pytest

from data_tools.audio import read_audio
from data_tools.tts_clean import (PEAK_CEILING, TARGET_SPEECH_DBFS, clean_tts_clip, estimate_snr_db, frame_energies_db,
                                  normalize_loudness, rate_mismatch, speech_threshold_db,
                                  trim_silence)

from .conftest import espeak_wav


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    audio, sr = read_audio(espeak_wav(tmp_path_factory.mktemp("clean") / "s.wav", "欢迎回家，二维码有效请您通过。"))
    return audio, sr


def test_trim_removes_added_silence_but_keeps_speech(speech):
    audio, sr = speech
    padded = np.concatenate([np.zeros(sr), audio, np.zeros(2 * sr)]).astype(np.float32)
    trimmed, cut_start, cut_end = trim_silence(padded, sr)
    assert cut_start == pytest.approx(1.0, abs=0.1) and cut_end >= 2.0
    assert len(trimmed) <= len(audio) + int(0.1 * sr)
    assert np.max(np.abs(trimmed)) == pytest.approx(np.max(np.abs(audio)), rel=1e-6)


def test_normalise_reaches_target_level_without_clipping(speech):
    audio, sr = speech
    quiet = (audio * 0.05).astype(np.float32)
    louder, gain = normalize_loudness(quiet, sr)
    assert gain > 10
    assert np.max(np.abs(louder)) <= PEAK_CEILING + 1e-6
    before = frame_energies_db(quiet, sr)
    voiced = before > speech_threshold_db(before)  # the frames normalisation measured
    after = frame_energies_db(louder, sr)[voiced]
    speech_db = 10 * np.log10(np.mean(10 ** (after / 10)))
    if np.max(np.abs(louder)) >= PEAK_CEILING - 1e-3:  # peak-limited: may stay under the target
        assert speech_db <= TARGET_SPEECH_DBFS + 0.5
    else:
        assert speech_db == pytest.approx(TARGET_SPEECH_DBFS, abs=0.5)


def test_snr_estimate_tells_clean_from_noisy(speech):
    audio, sr = speech
    rng = np.random.default_rng(0)
    noisy = audio + 0.05 * rng.standard_normal(len(audio)).astype(np.float32)
    clean_snr, noisy_snr = estimate_snr_db(audio, sr), estimate_snr_db(noisy, sr)
    assert clean_snr > 30 > noisy_snr
    _, report = clean_tts_clip(noisy, sr)
    assert report.noisy


def test_rate_mismatch_names_both_rates():
    assert rate_mismatch(22050, 22050) is None
    warning = rate_mismatch(16000, 44100)
    assert "16000" in warning and "44100" in warning
