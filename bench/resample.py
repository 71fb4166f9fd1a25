"""Benchmark: resample 200 clips (3 s, 44.1 kHz, stereo) to 16 kHz mono.

Ours (data_tools.audio.convert_many: in-process decode + soxr, process pool) against what the team runs
today: `ffmpeg -y -i IN -ac 1 -ar 16000 OUT` once per file, sequentially. Same input files, one run,
prints both times and the ratio. Target: >= 10x.

    .venv/bin/python bench/resample.py [--clips 200] [--workers N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_tools.audio import audio_duration, convert_many, default_workers, write_wav  # noqa: E402


def make_inputs(folder: Path, clips: int, seconds: float = 3.0, sr: int = 44100) -> list[Path]:
    """Stereo chirps + noise, so the resampler has real content to filter."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(clips):
        f0 = 200 + 20 * i
        left = 0.4 * np.sin(2 * np.pi * (f0 + 300 * t) * t)
        right = 0.4 * np.sin(2 * np.pi * (f0 * 1.5) * t)
        stereo = np.stack([left, right], axis=1) + 0.01 * rng.standard_normal((len(t), 2))
        path = folder / f"clip_{i:03d}.wav"
        write_wav(path, stereo.astype(np.float32), sr)
        paths.append(path)
    return paths


def ffmpeg_loop(inputs: list[Path], out_dir: Path) -> float:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for src in inputs:
        subprocess.run(["ffmpeg", "-y", "-i", str(src), "-ac", "1", "-ar", "16000", str(out_dir / src.name)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def ours(inputs: list[Path], out_dir: Path, workers: int) -> float:
    started = time.perf_counter()
    outcomes = convert_many([(src, out_dir / src.name) for src in inputs], 16000, channels=1, workers=workers)
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise SystemExit(f"convert_many failed on {len(failed)} files, first: {failed[0].error}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-resample-") as tmp:
        tmp_dir = Path(tmp)
        inputs = make_inputs(tmp_dir / "in", args.clips)
        t_ffmpeg = ffmpeg_loop(inputs, tmp_dir / "ffmpeg")
        t_ours = ours(inputs, tmp_dir / "ours", args.workers)
        # Same result shape: both outputs are 3 s of 16 kHz mono.
        for name in ("ffmpeg", "ours"):
            duration = audio_duration(tmp_dir / name / inputs[0].name)
            assert abs(duration - 3.0) < 0.01, f"{name} output lasts {duration} s"
    print(f"clips: {args.clips} x 3 s 44.1 kHz stereo -> 16 kHz mono; workers: {args.workers}")
    print(f"sequential ffmpeg loop: {t_ffmpeg:.2f} s ({1000 * t_ffmpeg / args.clips:.1f} ms/clip)")
    print(f"convert_many (ours):    {t_ours:.2f} s ({1000 * t_ours / args.clips:.1f} ms/clip)")
    print(f"speed-up: {t_ffmpeg / t_ours:.1f}x")


if __name__ == "__main__":
    main()
