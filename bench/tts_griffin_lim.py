"""Griffin-Lim copy-synthesis on the TTS demo voice: 80 vs 128 mel bands, oversampling 1 vs 2.

Why the demo spec uses 128-band mels and oversample 2: this prints, for a few held-out demo recordings,
DNSMOS OVRL and wide-band PESQ of Griffin-Lim on the recording's own mel (what a perfect FastPitch would
give), the real-time factor of each setting, and ratios against NeMo's usual 80 bands.

    .venv/bin/python bench/tts_griffin_lim.py [--clips 6]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=audio, sr=22050, n_fft=1024, hop_length=256, win_length=1024,
                                         n_mels=n_mels, fmin=0, fmax=8000, power=1.0, norm="slaney")
    return np.log(mel + 1e-5)


def main() -> None:
    from data_tools.audio import read_audio, to_mono
    from data_tools.manifest import read_manifest
    from data_tools.speech_synth import ensure_demo_speech
    from tasks.tts.evaluate import dnsmos, pesq_wb, to_eval_rate
    from tasks.tts.vocoder import MelSettings, griffin_lim

    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=6)
    args = parser.parse_args()
    entries = read_manifest(ensure_demo_speech("tts") / "test_manifest.json")[: args.clips]
    clips = [to_mono(read_audio(e.audio_filepath)[0]) for e in entries]
    reference = np.mean([dnsmos(to_eval_rate(a, 22050))["ovrl"] for a in clips])
    print(f"recordings: DNSMOS OVRL {reference:.3f} ({len(clips)} clips)")
    results = {}
    for n_mels, oversample in ((80, 1), (80, 2), (128, 1), (128, 2)):
        settings = MelSettings(22050, 1024, 1024, 256, n_mels, 0.0, 8000.0, 1e-5)
        ovrl, pesq, seconds, audio_seconds = [], [], 0.0, 0.0
        for audio in clips:
            t0 = time.perf_counter()
            out = griffin_lim(log_mel(audio, n_mels), settings, n_iter=60, power=1.2, oversample=oversample)[: len(audio)]
            seconds += time.perf_counter() - t0
            audio_seconds += len(audio) / 22050
            ref16, out16 = to_eval_rate(audio[: len(out)], 22050), to_eval_rate(out, 22050)
            ovrl.append(dnsmos(out16)["ovrl"])
            pesq.append(pesq_wb(ref16, out16))
        results[(n_mels, oversample)] = (np.mean(ovrl), np.mean(pesq), seconds / audio_seconds)
        print(f"{n_mels:3d} mels, oversample {oversample}: DNSMOS OVRL {np.mean(ovrl):.3f}  PESQ {np.mean(pesq):.3f}  "
              f"RTF {seconds / audio_seconds:.3f}")
    base = results[(80, 1)]
    for key, (o, p, r) in results.items():
        print(f"ratio vs 80 mels/oversample 1 -> {key}: OVRL x{o / base[0]:.2f}, PESQ x{p / base[1]:.2f}, "
              f"time x{r / base[2]:.2f}")


if __name__ == "__main__":
    main()
