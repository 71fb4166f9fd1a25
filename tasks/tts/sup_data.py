"""Supplementary data for FastPitch: pitch per clip and the speaker's pitch mean/std.

NeMo's TTSDataset computes pitch with librosa.pyin and caches it under the clip's FILE NAME; after clips
are re-split or re-cleaned under the same names it silently reuses stale pitch. Here pitch is cached by
the clip's CONTENT hash (plus the pyin settings), in a cache shared by runs, and the run's own
sup_data/<split>/pitch/<id>.pt files — named exactly as NeMo looks them up — are rebuilt from that cache
every time this stage runs. The pyin call is NeMo's (same arguments), so values are identical.

Alignment priors are not stored: NeMo's dataset computes them per item (beta-binomial prior, through its
cached BetaBinomialInterpolator when the model config says use_beta_binomial_interpolator).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from hackathon.core.atomic import atomic_path, atomic_write_json
from hackathon.core.errors import HackathonError
from hackathon.core.fingerprint import file_sha256
from hackathon.core.progress import track

SPLITS = ("train", "val")


def default_cache_dir() -> Path:
    from hackathon.core.paths import runs_root

    return runs_root() / "tts" / ".pitch_cache"


def pitch_settings(cfg) -> dict:
    """Everything a pitch track depends on besides the audio bytes. The pyin frame is FastPitch's STFT window
    (1024 at 22.05 kHz, 2048 at 44.1 kHz), as in NeMo's TTSDataset, so its hop (frame / 4) is the mel hop."""
    from tasks.tts.model_config import check_sample_rates

    mels = check_sample_rates(cfg)
    return {"sample_rate": int(cfg.data.sample_rate), "fmin": float(cfg.sup_data.pitch_fmin),
            "fmax": float(cfg.sup_data.pitch_fmax), "frame_length": int(mels["n_window_size"]),
            "algo": "librosa.pyin/nemo-v1"}


def pitch_cache_key(audio_path: str | Path, settings: dict) -> str:
    """sha256 of the clip's bytes + the pyin settings: a re-split clip with an old name gets a new key."""
    h = hashlib.sha256(file_sha256(audio_path).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def compute_pitch(audio_path: str | Path, settings: dict) -> np.ndarray:
    """NeMo TTSDataset's pitch: librosa.pyin(audio, fmin, fmax, frame_length=win_length, sr, fill_na=0)."""
    import librosa
    import soundfile as sf

    audio, sr = sf.read(str(audio_path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != settings["sample_rate"]:
        raise HackathonError(f"{audio_path}: sample rate {sr} Hz, expected {settings['sample_rate']} Hz",
                             fix="The prepare stage converts clips; re-run it (hackathon run tts --from prepare).")
    f0, _, _ = librosa.pyin(audio, fmin=settings["fmin"], fmax=settings["fmax"],
                            frame_length=settings["frame_length"], sr=sr, fill_na=0.0)
    return f0.astype(np.float32)


def pitch_cache_path(audio_path: str | Path, settings: dict, cache_dir: Path) -> Path:
    key = pitch_cache_key(audio_path, settings)
    return Path(cache_dir) / key[:2] / f"{key}.npy"


def cached_pitch(audio_path: str | Path, settings: dict, cache_dir: Path) -> tuple[np.ndarray, bool]:
    """(pitch, was_cached). The cache file is written atomically, so concurrent runs cannot tear it."""
    path = pitch_cache_path(audio_path, settings, cache_dir)
    if path.exists():
        return np.load(path), True
    pitch = compute_pitch(audio_path, settings)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, pitch)
    return pitch, False


def _cached_pitch_job(job):
    audio_path, settings, cache_dir = job
    return cached_pitch(audio_path, settings, Path(cache_dir))


# Compiles (or loads) librosa.pyin's numba kernels with the dtypes compute_pitch passes.
PYIN_PROBE = """
import sys, numpy as np, librosa
sr, fmin, fmax, frame = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
tone = (0.3 * np.sin(2 * np.pi * 150 * np.arange(sr // 2) / sr)).astype(np.float32)
librosa.pyin(tone, fmin=fmin, fmax=fmax, frame_length=frame, sr=sr, fill_na=0.0)
"""


def librosa_numba_cache_files() -> list[Path]:
    """librosa's numba cache files (next to its sources, or under NUMBA_CACHE_DIR when set)."""
    spec = importlib.util.find_spec("librosa")
    roots = [Path(spec.origin).parent] if spec and spec.origin else []
    if os.environ.get("NUMBA_CACHE_DIR"):
        roots.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return [f for root in roots if root.is_dir() for pattern in ("*.nbi", "*.nbc") for f in root.rglob(pattern)
            if "librosa" in str(f)]


def warm_pitch_kernels(settings: dict, lock_dir: Path, probe: str = PYIN_PROBE, log=None,
                       cache_files=librosa_numba_cache_files) -> None:
    """Compile librosa.pyin's numba kernels in ONE process before pitch workers start.

    numba writes the two cache files of a @guvectorize(cache=True) kernel one after the other; pool workers
    compiling at once can leave a mismatched pair, and every later pyin call then dies with SIGSEGV
    (numba#10128, librosa#1998). The probe runs in a subprocess under a lock shared by all runs; if it
    crashes, librosa's numba cache is deleted (it is only a cache) and compiled again."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", probe, str(settings["sample_rate"]), str(settings["fmin"]), str(settings["fmax"]),
            str(settings["frame_length"])]
    with open(lock_dir / ".pyin-warmup.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for attempt in (1, 2):
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode == 0:
                return
            if proc.returncode > 0 or attempt == 2:  # a Python error, or a crash that deleting the cache did not cure
                raise HackathonError(f"librosa.pyin cannot run here (exit code {proc.returncode}): "
                                     f"{proc.stderr.strip()[-800:]}",
                                     fix="Check the librosa/numba install (`pip install -e .[tts]` in the .venv); "
                                         "delete librosa's __pycache__/*.nbi *.nbc files and run again.")
            stale = cache_files()
            if log:
                log.warning("librosa.pyin crashed (signal %d): deleting %d numba cache files and compiling again",
                            -proc.returncode, len(stale))
            for f in stale:
                f.unlink(missing_ok=True)


def nemo_pitch_ids(audio_paths: list[str]) -> list[str]:
    """The names NeMo's TTSDataset gives each clip's pitch file (path relative to the common base dir)."""
    from nemo.collections.tts.parts.utils.tts_dataset_utils import get_base_dir

    base = get_base_dir(audio_paths)
    return [str(Path(p).relative_to(base).with_suffix("")).replace("/", "_") for p in audio_paths]


def pitch_statistics(pitches: list[np.ndarray]) -> dict:
    """Mean/std over voiced frames (pyin fills unvoiced ones with 0), as NeMo's compute_speaker_stats does."""
    voiced = np.concatenate([p[p > 0] for p in pitches]) if pitches else np.array([])
    if voiced.size == 0:
        raise HackathonError("No voiced frame found in the training clips (pitch is 0 everywhere).",
                             fix="Check the recordings are speech and sup_data.pitch_fmin/pitch_fmax cover the voice.")
    return {"pitch_mean": float(voiced.mean()), "pitch_std": float(voiced.std()), "voiced_frames": int(voiced.size)}


def read_rows(path: Path) -> list[dict]:
    from data_tools.manifest import read_manifest

    return [e.to_dict() for e in read_manifest(path)]


def keep_by_duration(rows: list[dict], cfg) -> list[dict]:
    """Apply the duration filter here, so NeMo's own filter keeps everything and its base dir (hence the
    pitch file names) is computed over exactly these clips."""
    lo, hi = float(cfg.data.min_duration), float(cfg.data.max_duration)
    return [r for r in rows if lo <= float(r["duration"]) <= hi]


def sup_data_stage(ctx) -> None:
    """Write sup_data/<split>.json, sup_data/<split>/pitch/<nemo id>.pt and sup_data/pitch_stats.json."""
    import torch

    from hackathon.core.atomic import atomic_write_jsonl

    settings = pitch_settings(ctx.cfg)
    cache_dir = Path(ctx.cfg.sup_data.cache_dir or default_cache_dir())
    workers = max(1, int(ctx.cfg.sup_data.workers))
    summary = {"cache_dir": str(cache_dir), "settings": settings}
    train_pitches = []
    warmed = False
    for split in SPLITS:
        rows = keep_by_duration(read_rows(ctx.path("g2p", f"{split}.json")), ctx.cfg)
        if not rows:
            raise HackathonError(f"No {split} clip between data.min_duration and data.max_duration "
                                 f"({ctx.path('g2p', f'{split}.json')}).", fix="Adjust data.min_duration/max_duration.")
        jobs = [(r["audio_filepath"], settings, str(cache_dir)) for r in rows]
        if not warmed and any(not pitch_cache_path(path, settings, cache_dir).exists() for path, _, _ in jobs):
            warm_pitch_kernels(settings, cache_dir, log=ctx.log)
            warmed = True
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
                results = list(track(pool.map(_cached_pitch_job, jobs, chunksize=4), f"pitch ({split})",
                                     len(jobs), unit="clip"))
        else:
            results = [_cached_pitch_job(j) for j in track(jobs, f"pitch ({split})", unit="clip")]
        pitch_dir = ctx.dir("sup_data", split, "pitch")
        for old in pitch_dir.glob("*.pt"):  # never leave a previous run's file under a reused name
            old.unlink()
        for pitch_id, (pitch, _) in zip(nemo_pitch_ids([r["audio_filepath"] for r in rows]), results):
            with atomic_path(pitch_dir / f"{pitch_id}.pt") as tmp:
                torch.save(torch.from_numpy(pitch), tmp)
        atomic_write_jsonl(ctx.path("sup_data", f"{split}.json"), rows)
        summary[f"{split}_clips"] = len(rows)
        summary[f"{split}_cache_hits"] = sum(1 for _, hit in results if hit)
        if split == "train":
            train_pitches = [p for p, _ in results]
    stats = {**pitch_statistics(train_pitches), "pitch_fmin": settings["fmin"], "pitch_fmax": settings["fmax"]}
    atomic_write_json(ctx.path("sup_data", "pitch_stats.json"), stats)
    ctx.record(**summary, pitch_mean=round(stats["pitch_mean"], 2), pitch_std=round(stats["pitch_std"], 2))
    ctx.log.info("sup_data: %s", {k: v for k, v in summary.items() if k != "settings"})
