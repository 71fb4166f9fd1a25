"""data.sample_rate picks matching FastPitch/HiFiGAN configs; every mismatch is refused before any work."""

from __future__ import annotations

import os
import subprocess

import pytest
from omegaconf import OmegaConf

from hackathon.core.config import load_config
from hackathon.core.errors import HackathonError


@pytest.mark.parametrize("rate,hop,window,upsample", [(22050, 256, 1024, 256), (44100, 512, 2048, 512)])
def test_sample_rate_selects_matching_model_configs(rate, hop, window, upsample):
    from tasks.tts.model_config import check_sample_rates, spec_model_config, upsample_product

    for spec in ("demo", "workstation", "demo44k"):  # the workstation's hub vocoder needs network: scratch here
        cfg = load_config("tts", spec, [f"data.sample_rate={rate}", "hifigan.enabled=true", "hifigan.init=scratch"])
        mels = check_sample_rates(cfg)
        assert (mels["sample_rate"], mels["n_window_stride"], mels["n_window_size"]) == (rate, hop, window), spec
        assert upsample_product(spec_model_config(cfg.hifigan)) == upsample
    assert load_config("tts", "workstation").data.sample_rate == 44100
    assert load_config("tts", "demo44k").data.sample_rate == 44100


@pytest.mark.parametrize("overrides,message,fix", [
    (["data.sample_rate=44100", "hifigan.enabled=true", "hifigan.model_config=models/hifigan_22050.yaml"],
     "HiFiGAN config hifigan_22050.yaml does not match", "hifigan_44100.yaml"),
    (["data.sample_rate=44100", "fastpitch.model_config=models/fastpitch_22050.yaml"],
     "data.sample_rate is 44100 Hz but the FastPitch config fastpitch_22050.yaml", "fastpitch_44100.yaml"),
    (["data.sample_rate=16000"], "no TTS model configs for this rate", "44100"),
    (["vocoder=hifigan", "hifigan.enabled=false"], "no vocoder would be trained", "hifigan.enabled=true"),
    (["hifigan.enabled=true", "hifigan.model_overrides.n_mel_channels=80"], "n_mel_channels", "n_mel_channels"),
])
def test_mismatches_are_refused_with_a_fix(overrides, message, fix):
    from tasks.tts.model_config import check_sample_rates

    with pytest.raises(HackathonError) as err:
        check_sample_rates(load_config("tts", "demo", overrides))
    assert message in err.value.message and fix in err.value.fix


def test_trained_vocoder_of_another_rate_is_refused():
    """What synthesis checks: a 22.05 kHz HiFiGAN (hop 256) under a 44.1 kHz FastPitch."""
    from tasks.tts.model_config import check_vocoder_mels, mel_settings, spec_model_config

    fastpitch = mel_settings(spec_model_config(load_config("tts", "demo44k").fastpitch))
    vocoder_22k = spec_model_config(load_config("tts", "demo").hifigan)
    with pytest.raises(HackathonError) as err:
        check_vocoder_mels(fastpitch, vocoder_22k, "hifigan.nemo", "the run's FastPitch")
    assert "sample_rate" in err.value.message and "hifigan_44100.yaml" in err.value.fix
    broken = OmegaConf.merge(spec_model_config(load_config("tts", "demo44k").hifigan),
                             {"model": {"generator": {"upsample_rates": [8, 8, 2, 2]}}})
    with pytest.raises(HackathonError, match="multiply to 256, the mel hop is 512"):
        check_vocoder_mels(fastpitch, broken, "hifigan.nemo", "the run's FastPitch")


def test_run_with_mismatched_vocoder_fails_in_prepare_before_any_training(hackathon_bin, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([hackathon_bin, "run", "tts", "--run-dir", str(run_dir), "data.sample_rate=44100",
                           "hifigan.enabled=true", "hifigan.model_config=models/hifigan_22050.yaml"],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert proc.returncode != 0
    assert "does not match" in proc.stderr and "hifigan_44100.yaml" in proc.stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "data" / "train.json").exists()
