"""Mel spectrogram -> waveform: Griffin-Lim (no training, the CPU demo's default) or a trained HiFiGAN.

Griffin-Lim inverts exactly the transform FastPitch's preprocessor applies (NeMo
AudioToMelSpectrogramPreprocessor with mag_power 1, natural log, `add` zero guard, slaney mel filters):
log-mel -> mel magnitude -> linear magnitude (non-negative least squares through the mel filterbank)
-> phase by fast Griffin-Lim. The copy-synthesis check in evaluate proves the two settings match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hackathon.core.errors import HackathonError

VOCODERS = ("griffin_lim", "hifigan")


@dataclass(frozen=True)
class MelSettings:
    """The mel transform of a FastPitch model (read from its preprocessor config)."""

    sample_rate: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    fmin: float
    fmax: float | None
    log_zero_guard_value: float

    @classmethod
    def from_fastpitch(cls, model) -> "MelSettings":
        pre = model.cfg.preprocessor
        return cls(sample_rate=int(pre.sample_rate), n_fft=int(pre.n_fft), win_length=int(pre.n_window_size),
                   hop_length=int(pre.n_window_stride), n_mels=int(pre.features), fmin=float(pre.lowfreq or 0),
                   fmax=None if pre.highfreq is None else float(pre.highfreq),
                   log_zero_guard_value=float(pre.get("log_zero_guard_value", 1e-5)))


def mel_to_linear(log_mel: np.ndarray, mel: MelSettings) -> np.ndarray:
    """[n_mels, T] natural-log mel magnitudes -> [n_fft/2+1, T] linear magnitudes (NNLS, non-negative)."""
    import librosa

    mel_mag = np.maximum(np.exp(log_mel.astype(np.float64)) - mel.log_zero_guard_value, 0.0)
    basis = librosa.filters.mel(sr=mel.sample_rate, n_fft=mel.n_fft, n_mels=mel.n_mels, fmin=mel.fmin,
                                fmax=mel.fmax, norm="slaney")
    return librosa.util.nnls(basis, mel_mag).astype(np.float32)


def griffin_lim(log_mel: np.ndarray, mel: MelSettings, n_iter: int = 60, power: float = 1.2,
                momentum: float = 0.99, oversample: int = 2, seed: int = 0) -> np.ndarray:
    """Waveform (float32, peak <= 0.95) from a log-mel spectrogram.

    `oversample` > 1 interpolates the magnitudes in time and reconstructs with a hop that many times
    shorter: more overlap between frames makes the phase estimate more consistent (less "phasiness").
    """
    import librosa

    magnitude = interpolate_frames(mel_to_linear(log_mel, mel) ** power, oversample)
    audio = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=mel.hop_length // oversample,
                               win_length=mel.win_length, n_fft=mel.n_fft, window="hann", center=True,
                               momentum=momentum, init="random", random_state=seed)
    return normalize_peak(audio)


def interpolate_frames(spec: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation along time: T frames -> (T-1)*factor+1 frames."""
    if factor <= 1 or spec.shape[1] < 2:
        return spec
    frames = np.arange(spec.shape[1])
    fine = np.arange((spec.shape[1] - 1) * factor + 1) / factor
    return np.stack([np.interp(fine, frames, row) for row in spec]).astype(spec.dtype)


def normalize_peak(audio: np.ndarray, peak: float = 0.95) -> np.ndarray:
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio / top * peak).astype(np.float32) if top > 0 else audio.astype(np.float32)


class Vocoder:
    """One interface for both vocoders: __call__(log_mel [n_mels, T]) -> waveform at mel.sample_rate."""

    def __init__(self, kind: str, mel: MelSettings, griffin_lim_cfg=None, hifigan_model=None):
        if kind not in VOCODERS:
            raise HackathonError(f"Unknown vocoder {kind!r}.", fix=f"Use vocoder={' or vocoder='.join(VOCODERS)}.")
        self.kind, self.mel, self.gl_cfg, self.hifigan = kind, mel, griffin_lim_cfg, hifigan_model

    def __call__(self, log_mel: np.ndarray) -> np.ndarray:
        if self.kind == "griffin_lim":
            c = self.gl_cfg
            return griffin_lim(log_mel, self.mel, n_iter=int(c.n_iter), power=float(c.power),
                               momentum=float(c.momentum), oversample=int(c.oversample))
        import torch

        with torch.no_grad():
            spec = torch.from_numpy(log_mel).unsqueeze(0).to(self.hifigan.device)
            audio = self.hifigan.convert_spectrogram_to_audio(spec=spec)
        return normalize_peak(audio.squeeze().cpu().numpy())


def load_vocoder(run_dir: str | Path, kind: str, mel: MelSettings, griffin_lim_cfg) -> Vocoder:
    """The run's vocoder; HiFiGAN comes from <run>/models/hifigan.nemo (written by the hifigan stage)."""
    if kind != "hifigan":
        return Vocoder(kind, mel, griffin_lim_cfg)
    from tasks.tts.hifigan import load_hifigan
    from tasks.tts.model_config import check_vocoder_mels

    hifigan = load_hifigan(run_dir)
    fastpitch_mels = {"sample_rate": mel.sample_rate, "n_mel_channels": mel.n_mels, "n_fft": mel.n_fft,
                      "n_window_size": mel.win_length, "n_window_stride": mel.hop_length, "lowfreq": mel.fmin,
                      "highfreq": mel.fmax}
    check_vocoder_mels(fastpitch_mels, hifigan_mel_config(hifigan.cfg), f"{run_dir}/models/hifigan.nemo",
                       "the run's FastPitch")
    return Vocoder(kind, mel, griffin_lim_cfg, hifigan_model=hifigan)


def hifigan_mel_config(model_cfg):
    """A trained HiFiGAN's mel settings in model-config form (read from its preprocessor and generator)."""
    from omegaconf import OmegaConf

    pre = model_cfg.preprocessor
    return OmegaConf.create({"sample_rate": int(pre.sample_rate), "n_mel_channels": int(pre.nfilt),
                             "n_fft": int(pre.n_fft), "n_window_size": int(pre.n_window_size),
                             "n_window_stride": int(pre.n_window_stride), "lowfreq": float(pre.lowfreq or 0),
                             "highfreq": None if pre.highfreq is None else float(pre.highfreq),
                             "model": {"generator": {"upsample_rates": list(model_cfg.generator.upsample_rates)}}})
