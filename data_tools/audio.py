"""The one audio helper: read any format, write 16-bit WAV atomically, resample, convert in parallel.

Every other module (prepare-audio, TTS cleaning, phrase split, ASR/TTS pipelines) reads and writes
audio through here, so format quirks are handled once. Arrays are float32 in [-1, 1]: shape (n,) for
mono, (n, channels) for multi-channel — the soundfile convention.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np
import soundfile as sf

from hackathon.core.atomic import atomic_write_bytes
from hackathon.core.errors import HackathonError

T = TypeVar("T")
R = TypeVar("R")
_FFMPEG_TIMEOUT_S = 120
# A decode shorter than this share of the frames the header promises means the file was cut off.
_TRUNCATION_TOLERANCE = 0.98


class AudioReadError(HackathonError):
    """A file that cannot be used as audio; `kind` classifies it for batch reports.

    kinds: unreadable_path, zero_byte, not_audio, truncated.
    """

    def __init__(self, message: str, fix: str, kind: str):
        super().__init__(message, fix=fix)
        self.kind = kind


@dataclass(frozen=True)
class ConversionOutcome:
    """Result of converting one file in a batch: the batch never stops on a bad file."""

    src: str
    dst: str
    ok: bool
    duration: float = 0.0
    source_rate: int = 0
    source_channels: int = 0
    error: str = ""


def _check_readable(path: Path) -> None:
    if not path.exists():
        what = "broken symlink" if path.is_symlink() else "no such audio file"
        raise AudioReadError(f"{path}: {what}", fix="check the path (and that the disk is mounted)",
                             kind="unreadable_path")
    if path.is_dir():
        raise AudioReadError(f"{path}: is a directory, not an audio file", fix="pass the audio file itself",
                             kind="unreadable_path")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise AudioReadError(f"{path}: cannot open audio file ({exc.strerror})",
                             fix=f"chmod a+r '{path}' or copy it somewhere readable", kind="unreadable_path") from exc
    if path.stat().st_size == 0:
        raise AudioReadError(f"{path}: audio file is empty (0 bytes)",
                             fix="re-export or re-copy the recording; the upload probably failed", kind="zero_byte")


def _probe_with_ffmpeg(path: Path) -> tuple[int, int]:
    """(sample_rate, channels) of the first audio stream, or an AudioReadError saying it is not audio."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a:0",
           "-show_entries", "stream=sample_rate,channels", "-of", "json", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_FFMPEG_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise HackathonError(f"{path}: format needs ffmpeg to decode but ffprobe is not installed",
                             fix="apt-get install ffmpeg") from exc
    streams = []
    if proc.returncode == 0:
        try:
            streams = json.loads(proc.stdout or "{}").get("streams", [])
        except json.JSONDecodeError:
            streams = []
    if not streams:
        detail = (proc.stderr or "").strip().splitlines()
        reason = detail[-1] if detail else "no audio stream found"
        raise AudioReadError(f"{path}: not a readable audio file ({reason})",
                             fix="check the file plays in a media player; re-export it as WAV/FLAC/MP3",
                             kind="not_audio")
    stream = streams[0]
    return int(stream["sample_rate"]), int(stream["channels"])


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    sr, channels = _probe_with_ffmpeg(path)
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(sr), "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S)
    if proc.returncode != 0 or not proc.stdout:
        reason = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["decoded nothing"])[-1]
        raise AudioReadError(f"{path}: ffmpeg could not decode the audio ({reason})",
                             fix="the file is probably truncated or corrupt; re-export or re-copy it",
                             kind="truncated")
    audio = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    usable = len(audio) - len(audio) % channels
    audio = audio[:usable].reshape(-1, channels)
    return (audio[:, 0].copy() if channels == 1 else audio), sr


def _wav_declared_frames(path: Path) -> int | None:
    """Frames the RIFF 'data' chunk header promises (libsndfile silently shortens a cut-off WAV)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                chunk_id, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if chunk_id == b"fmt ":
                    fmt = fh.read(size + size % 2)
                    block_align = int.from_bytes(fmt[12:14], "little")
                elif chunk_id == b"data":
                    # 0 and 0xFFFFFFFF mark streamed WAVs that never got their size filled in.
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    fh.seek(size + size % 2, os.SEEK_CUR)
    except OSError:
        return None


def declared_frames(path: str | os.PathLike) -> int | None:
    """Frame count from the file's header (None when the format does not state one)."""
    path = Path(path)
    wav_frames = _wav_declared_frames(path)
    if wav_frames is not None:
        return wav_frames
    try:
        frames = sf.info(str(path)).frames
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    return frames if 0 < frames < 2**62 else None


def read_audio(path: str | os.PathLike, check_truncation: bool = False) -> tuple[np.ndarray, int]:
    """Read any audio file as float32: (samples,) for mono or (samples, channels), and its sample rate.

    soundfile (libsndfile: wav, flac, ogg, mp3) first; ffmpeg for everything else (m4a, aac, webm...).
    A file that neither can read raises AudioReadError (a HackathonError) naming it. With
    check_truncation, a file holding fewer frames than its header promises is an error too.
    """
    path = Path(path)
    _check_readable(path)
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        audio, sr = _decode_with_ffmpeg(path)
    if audio.size == 0:
        raise AudioReadError(f"{path}: audio file holds no samples (truncated header-only file?)",
                             fix="re-export or re-copy the recording", kind="truncated")
    if check_truncation:
        promised = declared_frames(path)
        if promised and len(audio) < _TRUNCATION_TOLERANCE * promised:
            raise AudioReadError(
                f"{path}: truncated: header promises {promised / sr:.2f} s, file holds {len(audio) / sr:.2f} s",
                fix="the copy or upload was cut off; copy the file again from the recorder", kind="truncated")
    return np.ascontiguousarray(audio, dtype=np.float32), int(sr)


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds, from the header when soundfile can read it (fast), else by decoding."""
    path = Path(path)
    try:
        info = sf.info(str(path))
        if info.frames > 0:
            return info.frames / float(info.samplerate)
    except (sf.LibsndfileError, RuntimeError):
        pass
    audio, sr = read_audio(path)
    return len(audio) / float(sr)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average the channels (a (n, ch) array becomes (n,)); mono input is returned as is."""
    if audio.ndim == 1:
        return audio
    # A matrix-vector product is ~20x faster than mean(axis=1) on interleaved (n, ch) arrays.
    weights = np.full(audio.shape[1], 1.0 / audio.shape[1], dtype=np.float32)
    return (audio @ weights).astype(np.float32, copy=False)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality resampling with soxr (the same library sox uses); no-op when the rates match."""
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sr: int) -> Path:
    """Write 16-bit PCM WAV atomically (a kill mid-write never leaves a torn file). Clips to [-1, 1]."""
    path = Path(path)
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    # Encode in memory, then one write: libsndfile's many small writes to disk cost ~10x more.
    buffer = io.BytesIO()
    sf.write(buffer, clipped, int(sr), subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, sr: int, channels: int = 1) -> ConversionOutcome:
    """Read `src` (any format), mix to `channels` (1 = mono), resample to `sr`, write 16-bit WAV `dst`.

    Raises HackathonError for an unreadable source; use convert_many for batches that must go on.
    """
    audio, sr_in = read_audio(src)
    source_channels = 1 if audio.ndim == 1 else audio.shape[1]
    if channels == 1:
        audio = to_mono(audio)
    elif audio.ndim == 1:
        audio = np.repeat(audio[:, None], channels, axis=1)
    elif audio.shape[1] != channels:
        raise HackathonError(f"{src}: has {audio.shape[1]} channels, cannot map to {channels}",
                             fix="convert with channels=1 (mono) or the file's own channel count")
    audio = resample(audio, sr_in, sr)
    write_wav(dst, audio, sr)
    return ConversionOutcome(str(src), str(dst), True, duration=len(audio) / float(sr),
                             source_rate=sr_in, source_channels=source_channels)


def _convert_one(job: tuple[str, str, int, int]) -> ConversionOutcome:
    src, dst, sr, channels = job
    try:
        return convert_file(src, dst, sr, channels)
    except HackathonError as exc:
        return ConversionOutcome(src, dst, False, error=exc.message)
    except Exception as exc:  # a corrupt file must not stop the batch; report what happened
        return ConversionOutcome(src, dst, False, error=f"{src}: {type(exc).__name__}: {exc}")


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def map_clips(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """fn over items in a process pool (in order); in-process when there is little to do.

    The audio batch tools (convert_many, prepare-audio, phrase-split) all run through here. `fn` must be
    a module-level function and must catch its own per-file errors so one bad file never stops a batch.
    """
    workers = workers or default_workers()
    if workers == 1 or len(items) < 4:
        return [fn(item) for item in items]
    chunksize = max(1, len(items) // (workers * 4))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items, chunksize=chunksize))


def convert_many(pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]], sr: int, channels: int = 1,
                 workers: int | None = None) -> list[ConversionOutcome]:
    """Convert (src, dst) pairs in a process pool; returns one outcome per pair, in order.

    Why fast: decoding and soxr resampling happen in-process (no ffmpeg start-up per file) and the
    pool keeps every core busy. Bad files come back as ok=False with the reason; the rest go on.
    """
    jobs = [(str(s), str(d), int(sr), int(channels)) for s, d in pairs]
    return map_clips(_convert_one, jobs, workers)
