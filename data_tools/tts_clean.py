"""TTS clip cleaning: trim edge silence, normalise loudness, estimate SNR, flag rate mismatches.

TTS models learn whatever is in the clip, silence and room noise included, so TTS data gets cleaned
(prepare-audio does it by default for --task tts). Everything works on float32 mono arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The competition scores TTS at 44.1 kHz; clips from online TTS platforms are usually 16 kHz.
COMPETITION_TTS_RATE = 44100
TARGET_SPEECH_DBFS = -20.0  # RMS of the voiced frames after normalisation
PEAK_CEILING = 0.95  # normalisation never pushes peaks above this (no new clipping)
NOISY_SNR_DB = 20.0  # below this estimated SNR a TTS clip is flagged as noisy
_FRAME_S = 0.02


@dataclass(frozen=True)
class CleanReport:
    """What cleaning did to one clip (goes into prepare-audio's report.json)."""

    trimmed_start_s: float
    trimmed_end_s: float
    gain_db: float
    snr_db: float
    noisy: bool

    def as_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def frame_energies_db(audio: np.ndarray, sr: int, frame_s: float = _FRAME_S) -> np.ndarray:
    """RMS level (dBFS) of consecutive non-overlapping frames."""
    frame = max(1, int(sr * frame_s))
    n = len(audio) // frame
    if n == 0:
        return np.array([20 * np.log10(np.sqrt(np.mean(audio ** 2)) + 1e-10)]) if len(audio) else np.array([-200.0])
    frames = audio[: n * frame].reshape(n, frame)
    return 20 * np.log10(np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-10)


def speech_threshold_db(levels_db: np.ndarray, floor_db: float = -50.0, below_peak_db: float = 35.0) -> float:
    """Frames louder than this count as speech: 35 dB under the loudest frame, never below -50 dBFS."""
    return max(floor_db, float(np.max(levels_db)) - below_peak_db)


def trim_silence(audio: np.ndarray, sr: int, pad_s: float = 0.05) -> tuple[np.ndarray, float, float]:
    """Cut leading/trailing silence, keeping `pad_s` of margin; returns (audio, cut_start_s, cut_end_s)."""
    levels = frame_energies_db(audio, sr)
    voiced = np.nonzero(levels > speech_threshold_db(levels))[0]
    if len(voiced) == 0:
        return audio, 0.0, 0.0
    frame = int(sr * _FRAME_S)
    pad = int(sr * pad_s)
    start = max(0, voiced[0] * frame - pad)
    end = min(len(audio), (voiced[-1] + 1) * frame + pad)
    return audio[start:end], start / sr, (len(audio) - end) / sr


def normalize_loudness(audio: np.ndarray, sr: int, target_dbfs: float = TARGET_SPEECH_DBFS) -> tuple[np.ndarray, float]:
    """Scale so the voiced frames average `target_dbfs` RMS, capped so peaks stay <= PEAK_CEILING.

    Voiced-frame RMS (not whole-file RMS) so that a clip with long pauses is not pushed louder.
    """
    levels = frame_energies_db(audio, sr)
    voiced = levels[levels > speech_threshold_db(levels)]
    if len(voiced) == 0:
        return audio, 0.0
    speech_db = 10 * np.log10(np.mean(10 ** (voiced / 10)))
    gain_db = target_dbfs - speech_db
    peak = float(np.max(np.abs(audio))) or 1e-10
    gain_db = min(gain_db, 20 * np.log10(PEAK_CEILING / peak))
    return (audio * 10 ** (gain_db / 20)).astype(np.float32), float(gain_db)


def estimate_snr_db(audio: np.ndarray, sr: int) -> float:
    """Rough SNR: loud frames (90th percentile power) against the quiet ones (10th percentile).

    Good enough to tell a studio clip (> 30 dB) from a phone in a lobby (< 20 dB); capped at 100 dB
    because synthetic speech has digital silence.
    """
    power = 10 ** (frame_energies_db(audio, sr) / 10)
    noise = float(np.percentile(power, 10))
    signal = float(np.percentile(power, 90))
    if noise <= 1e-10:
        return 100.0
    return float(min(100.0, 10 * np.log10(max(signal - noise, 1e-12) / noise)))


def clean_tts_clip(audio: np.ndarray, sr: int) -> tuple[np.ndarray, CleanReport]:
    """Trim + normalise one mono clip; the SNR is measured before normalisation changes nothing in it."""
    snr = estimate_snr_db(audio, sr)
    trimmed, cut_start, cut_end = trim_silence(audio, sr)
    normalised, gain = normalize_loudness(trimmed, sr)
    return normalised, CleanReport(cut_start, cut_end, gain, snr, snr < NOISY_SNR_DB)


def rate_mismatch(source_rate: int, target_rate: int) -> str | None:
    """A warning when the clip's rate cannot deliver what the model/competition needs, else None."""
    if source_rate < target_rate:
        return (f"recorded at {source_rate} Hz but resampled up to {target_rate} Hz: upsampling adds no "
                f"high frequencies (platform TTS gives 16 kHz; the competition asks {COMPETITION_TTS_RATE} Hz)")
    return None


def dataset_rate_note(target_rate: int) -> str | None:
    """A dataset-level note when the TTS target rate is not the competition's."""
    if target_rate != COMPETITION_TTS_RATE:
        return (f"TTS data prepared at {target_rate} Hz; the competition asks {COMPETITION_TTS_RATE} Hz: "
                f"use --sample-rate {COMPETITION_TTS_RATE} with 44.1 kHz recordings for the final model")
    return None
