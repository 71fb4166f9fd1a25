"""Evaluation metrics on known inputs: PESQ of a file against itself, DNSMOS drops with noise, CER split."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from data_tools.audio import read_audio, to_mono


@pytest.fixture(scope="module")
def speech16(tmp_path_factory):
    """Real Mandarin speech (espeak-ng), at 16 kHz."""
    from tasks.tts.evaluate import to_eval_rate

    path = tmp_path_factory.mktemp("speech") / "s.wav"
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin+f2", "-w", str(path), "您好，张伟，欢迎回家，二维码有效请您通过。"],
                   check=True, capture_output=True)
    audio, sr = read_audio(path)
    return to_eval_rate(to_mono(audio) * 0.8, sr)


def test_pesq_of_a_clip_against_itself_is_the_maximum(speech16):
    from tasks.tts.evaluate import pesq_wb

    assert pesq_wb(speech16, speech16) == pytest.approx(4.64, abs=0.05)


def test_noise_lowers_dnsmos_and_pesq(speech16):
    from tasks.tts.evaluate import dnsmos, pesq_wb

    noisy = np.clip(speech16 + np.random.default_rng(0).normal(0, 0.03, speech16.shape).astype(np.float32), -1, 1)
    clean_scores, noisy_scores = dnsmos(speech16), dnsmos(noisy)
    assert noisy_scores["ovrl"] < clean_scores["ovrl"] - 0.3
    assert noisy_scores["bak"] < clean_scores["bak"]
    assert pesq_wb(speech16, noisy) < 3.0


@pytest.mark.parametrize("method", ["trim", "stretch"])
def test_alignment_makes_lengths_equal_and_ignores_added_silence(speech16, method):
    from tasks.tts.evaluate import align_lengths, pesq_wb

    padded = np.concatenate([np.zeros(8000, np.float32), speech16, np.zeros(3000, np.float32)])
    ref, deg = align_lengths(speech16, padded, method)
    assert len(ref) == len(deg)
    assert pesq_wb(ref, deg) > 4.0


def test_cer_split_into_fixed_sentence_and_name():
    from tasks.tts.evaluate import text_scores

    exact = text_scores("您好，张伟，欢迎回家，二维码有效请您通过。", "您好张伟欢迎回家二维码有效请您通过")
    assert exact["errors"] == 0 and exact["name_exact"] and exact["name"] == "张伟"

    wrong_name = text_scores("您好，欧阳娜娜，欢迎回家。", "您好欧样娜欢迎回家")
    assert wrong_name["fixed_errors"] == 0 and not wrong_name["name_exact"]
    assert wrong_name["errors"] == 2  # one substitution, one deletion, both inside the name
    assert wrong_name["name_heard"] == "欧样娜"

    wrong_fixed = text_scores("您好，张伟，欢迎回家。", "你好张伟欢迎回家")
    assert wrong_fixed["fixed_errors"] == 1 and wrong_fixed["name_exact"]


def test_high_band_ratio_sees_what_resampling_loses():
    """44.1 kHz audio with a 14 kHz component vs the same audio through 22.05 kHz and back: only the native
    one keeps the band above 8 kHz, the ratio says so at each clip's own rate."""
    from data_tools.audio import resample
    from tasks.tts.evaluate import band_energy_fraction, high_band_ratio

    sr = 44100
    t = np.arange(sr) / sr
    native = (0.5 * np.sin(2 * np.pi * 300 * t) + 0.1 * np.sin(2 * np.pi * 14000 * t)).astype(np.float32)
    through_22k = resample(resample(native, sr, 22050), 22050, sr)
    assert band_energy_fraction(native, sr) == pytest.approx(0.04 / 1.04, rel=0.05)
    assert high_band_ratio(native, sr, native, sr) == pytest.approx(1.0)
    assert high_band_ratio(through_22k, sr, native, sr) < 0.01
    assert high_band_ratio(native, sr, np.sin(2 * np.pi * 300 * t).astype(np.float32), sr) is None  # no ref band
