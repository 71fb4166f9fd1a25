"""prepare-audio: a folder of team recordings -> validated 16-bit mono WAVs + NeMo manifest + report.

    prepare_audio(src, out_dir, task="asr") -> PrepareResult

SRC is a folder of audio (wav, flac, mp3, m4a, ogg, ...; any rate, channels, bit depth), a NeMo
manifest, or a Label Studio JSON export (a file, or a folder holding one: its annotated clips, read where
they lie; data_tools/label_studio.py). Transcripts come from (first match wins per clip): the manifest or
export, CSV/TSV tables in SRC (or `transcripts=`), or a `<clip>.txt` next to the clip. Every clip is decoded, checked, mixed to mono,
(TTS: trimmed + loudness-normalised), resampled and written under OUT/wavs in a process pool. Bad
inputs never stop the batch: each one lands in OUT/report.json with its kind, reason and fix.
SRC is only ever read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_tools import label_studio
from data_tools.audio import AudioReadError, map_clips, read_audio, resample, to_mono, write_wav
from data_tools.manifest import ManifestEntry, write_manifest
from data_tools.tts_clean import NOISY_SNR_DB, clean_tts_clip, dataset_rate_note, frame_energies_db, rate_mismatch
from hackathon.core.atomic import atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.text import is_cjk

AUDIO_EXTENSIONS = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".wma", ".webm", ".aiff", ".aif"}
TRANSCRIPT_EXTENSIONS = {".txt", ".lab", ".csv", ".tsv", ".json", ".jsonl"}
IGNORED_EXTENSIONS = {".md", ".log", ".ini", ".yaml", ".yml"}
REPORT_NAME = "report.json"
MANIFEST_NAME = "manifest.json"

TASK_DEFAULTS = {
    # ASR: NeMo's usual rate; clips under 0.3 s hold no word, over 20 s blow up batch memory.
    "asr": {"sample_rate": 16000, "min_duration": 0.3, "max_duration": 20.0, "clean": False},
    # TTS: FastPitch/HiFi-GAN demo rate; the competition rate (44.1 kHz) is a --sample-rate away.
    "tts": {"sample_rate": 22050, "min_duration": 0.5, "max_duration": 20.0, "clean": True},
}
SILENT_DBFS = -50.0  # loudest 20 ms frame below this: nothing recorded (muted mic)
MAX_CLIPPED_FRACTION = 0.001  # more than 0.1% of samples at full scale: audibly distorted

FIXES = {
    "unreadable_path": "check the path exists and is readable (broken link? permissions? odd file name?)",
    "zero_byte": "re-copy the recording from the phone/laptop; the transfer failed",
    "truncated": "the copy was cut off; copy the file again from the recorder",
    "not_audio": "remove the file from the folder, or re-export it as WAV/FLAC/MP3",
    "silent": "re-record: the microphone was muted or unplugged",
    "clipped": "re-record with lower input gain (speak further from the microphone)",
    "too_short": "re-record the full phrase, or lower --min-duration",
    "too_long": "cut the recording into sentences (hackathon data phrase-split), or raise --max-duration",
    "missing_transcript": "add a line to the transcript CSV/TSV or a <clip>.txt next to the clip",
    "empty_transcript": "write what is said in the clip into its transcript",
    "out_of_vocabulary": "fix the typo / spell numbers and symbols out in Chinese characters, or extend --vocab",
    "not_utf8": "re-save the transcript as UTF-8 (e.g. iconv -f GBK -t UTF-8 in.txt > out.txt)",
    "duplicate": "delete the copy; the same recording must not be counted twice",
    "decode_error": "re-export the file as WAV; the decoder failed on it",
    **label_studio.FIXES,
}

# Punctuation dropped from ASR transcripts (the model writes no punctuation) and kept for TTS prosody.
PUNCTUATION = set("，。、！？；：“”‘’（）《》…—,.!?;:\"'()-")
TTS_PUNCTUATION = set("，。、！？；：,.!?;:")


# ---------------------------------------------------------------- data types

@dataclass
class Rejection:
    path: str
    kind: str
    reason: str
    fix: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Settings:
    task: str
    sample_rate: int
    min_duration: float
    max_duration: float
    clean: bool


@dataclass(frozen=True)
class ClipJob:
    src: str
    rel: str
    dst: str
    text: str
    speaker: str | None


@dataclass
class ClipResult:
    job: ClipJob
    rejection: Rejection | None = None
    duration: float = 0.0
    pcm_sha1: str = ""
    source_rate: int = 0
    source_channels: int = 0
    flags: list[str] = field(default_factory=list)
    cleaning: dict | None = None


@dataclass
class PrepareResult:
    """What prepare_audio produced; `rejected` non-empty means the CLI exits non-zero."""

    out_dir: Path
    manifest_path: Path
    report_path: Path
    accepted: int
    rejected: list[dict]
    flagged: list[dict]
    hours: float
    sample_rate: int

    @property
    def ok(self) -> bool:
        return not self.rejected


# ---------------------------------------------------------------- transcripts

@dataclass
class TranscriptSource:
    """Transcripts keyed by clip (relative path without extension, and bare stem as fallback)."""

    by_key: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # key -> (text, speaker)
    not_utf8: set[str] = field(default_factory=set)
    manifest_clips: list[Path] = field(default_factory=list)  # clips listed by a manifest SRC (or an export)
    clip_base: Path | None = None  # what a Label Studio export's clip paths are relative to
    rejected: list["Rejection"] = field(default_factory=list)  # export tasks that give no transcript

    def add(self, key: str, text: str | None, speaker: str | None = None, bad_encoding: bool = False) -> None:
        for k in _keys_for(key):
            if bad_encoding:
                self.not_utf8.add(k)
            self.by_key.setdefault(k, (text, speaker))

    def lookup(self, rel: str) -> tuple[str | None, str | None, bool]:
        """(text, speaker, bad_encoding) for a clip path relative to SRC."""
        for k in _keys_for(rel):
            if k in self.not_utf8:
                return None, None, True
            if k in self.by_key:
                text, speaker = self.by_key[k]
                return text, speaker, False
        return None, None, False


def _keys_for(path_like: str) -> list[str]:
    posix = path_like.replace("\\", "/").lstrip("./")
    no_ext = posix.rsplit(".", 1)[0] if "." in posix.rsplit("/", 1)[-1] else posix
    return list(dict.fromkeys([no_ext, no_ext.rsplit("/", 1)[-1]]))


def _decode_lines(raw: bytes) -> list[tuple[int, str, bool]]:
    """Lines of a text file as (lineno, text, is_utf8); bad lines decoded with replacement chars."""
    out = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        try:
            out.append((lineno, line.decode("utf-8"), True))
        except UnicodeDecodeError:
            out.append((lineno, line.decode("utf-8", "replace"), False))
    return out


_PATH_COLUMNS = ("audio_filepath", "audio", "file", "filename", "path", "wav", "clip", "id", "utt", "文件")
_TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "label", "normalized_text", "文本")
_SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk", "说话人")


def _read_table(path: Path, source: TranscriptSource) -> None:
    """CSV/TSV/pipe table: header with known column names, or headerless `clip,text[,speaker]`."""
    lines = _decode_lines(path.read_bytes())
    if not lines:
        return
    first = lines[0][1]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else max(",\t|", key=first.count)
    rows = [(n, next(csv.reader([t], delimiter=delimiter)) if t.strip() else [], ok) for n, t, ok in lines]
    header = [c.strip().lower() for c in rows[0][1]]
    path_col, text_col, spk_col = 0, 1, None
    if any(c in _PATH_COLUMNS for c in header) and any(c in _TEXT_COLUMNS for c in header):
        path_col = next(i for i, c in enumerate(header) if c in _PATH_COLUMNS)
        text_col = next(i for i, c in enumerate(header) if c in _TEXT_COLUMNS)
        spk_col = next((i for i, c in enumerate(header) if c in _SPEAKER_COLUMNS), None)
        rows = rows[1:]
    elif len(header) >= 3 and delimiter != "|":
        spk_col = 2  # headerless clip,text,speaker (LJSpeech's pipe format has normalised text there)
    for _, cells, ok in rows:
        if len(cells) <= path_col or not cells[path_col].strip():
            continue
        text = cells[text_col] if len(cells) > text_col else None
        speaker = (cells[spk_col].strip() or None) if spk_col is not None and len(cells) > spk_col else None
        source.add(cells[path_col].strip(), text, speaker, bad_encoding=not ok)


def _read_manifest_transcripts(path: Path, source: TranscriptSource, list_clips: bool) -> bool:
    """Load a NeMo manifest's texts; False when the file is not a manifest (some other JSON)."""
    lines = _decode_lines(path.read_bytes())
    parsed = []
    for lineno, text, ok in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            problem = None if isinstance(row, dict) and "audio_filepath" in row else (
                "not a NeMo manifest line (no audio_filepath)", "pass a NeMo JSONL manifest or a folder of audio")
        except json.JSONDecodeError:
            problem = ("broken JSON in manifest", "each line must be one JSON object; fix or delete that line")
        if problem:
            if list_clips:
                raise HackathonError(f"{path}:{lineno}: {problem[0]}", fix=problem[1])
            return False
        parsed.append((row, ok))
    for row, ok in parsed:
        audio = Path(str(row["audio_filepath"]))
        if not audio.is_absolute():
            audio = path.parent / audio
        key = os.path.relpath(audio, path.parent)
        source.add(key, row.get("text"), None if row.get("speaker") is None else str(row["speaker"]),
                   bad_encoding=not ok)
        if list_clips:
            source.manifest_clips.append(audio)
    return True


def _read_label_studio_export(path: Path, source: TranscriptSource) -> bool:
    """Clips + transcripts (TextArea results) of a Label Studio export; False when it is none or holds no audio."""
    tasks = label_studio.load_tasks(path, label_studio.AUDIO_KEYS) if label_studio.is_export(path) else []
    clips = []
    for task in tasks:
        clip = label_studio.resolve_media(label_studio.media_url(task, label_studio.AUDIO_KEYS), path)
        ann, kind, detail = label_studio.pick_annotation(task)
        texts = [t for r in (ann or {}).get("result", []) if r.get("type") == "textarea"
                 for t in (r.get("value") or {}).get("text") or []]
        if ann is not None and not clip.is_file():
            kind, detail = "missing_media", f"audio {clip} is gone"
        elif ann is not None and not "".join(texts).strip():
            kind, detail = "empty_annotation", f"annotation {ann.get('id')} has no transcript"
        if kind:
            source.rejected.append(Rejection(f"{label_studio.where(path, task)} ({clip})", kind, detail, FIXES[kind]))
            continue
        clips.append((clip, " ".join(texts)))
    if not tasks:
        return False
    source.clip_base = Path(os.path.commonpath([str(c.parent) for c, _ in clips])) if clips else path.parent
    for clip, text in clips:
        source.add(os.path.relpath(clip, source.clip_base), text)
        source.manifest_clips.append(clip)
    return True


def load_transcripts(src: Path, transcripts: Path | None = None) -> TranscriptSource:
    """Transcript tables: the given file, else every CSV/TSV/manifest/Label Studio export at the top of SRC."""
    source = TranscriptSource()
    if src.is_file() and not _read_label_studio_export(src, source):
        _read_manifest_transcripts(src, source, list_clips=True)
    candidates = [transcripts] if transcripts else (
        sorted(p for p in src.iterdir() if p.suffix.lower() in {".csv", ".tsv", ".json", ".jsonl"})
        if src.is_dir() else [])
    for table in candidates:
        if not table.is_file():
            raise HackathonError(f"{table}: transcript file not found", fix="pass an existing CSV/TSV/manifest")
        if table.suffix.lower() == ".json" and _read_label_studio_export(table, source):
            continue
        if table.suffix.lower() in {".json", ".jsonl"}:
            _read_manifest_transcripts(table, source, list_clips=False)
        else:
            _read_table(table, source)
    return source


def _side_transcript(clip: Path) -> tuple[str | None, bool]:
    """(<clip>.txt or .lab text, is_utf8); (None, True) when there is none."""
    for ext in (".txt", ".lab"):
        side = clip.with_suffix(ext)
        if side.is_file():
            raw = side.read_bytes()
            raw = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
            try:
                return raw.decode("utf-8"), True
            except UnicodeDecodeError:
                return None, False
    return None, True


# ---------------------------------------------------------------- text checks

def default_vocabulary_ok(ch: str, task: str) -> bool:
    """Chinese characters, ASCII letters and digits, space, apostrophe (+ sentence punctuation for TTS)."""
    return is_cjk(ch) or (ch.isascii() and (ch.isalnum() or ch in " '")) or (task == "tts" and ch in TTS_PUNCTUATION)


def normalize_transcript(text: str, task: str) -> str:
    """NFC, collapsed whitespace; ASR drops punctuation (the model writes none), TTS keeps it (prosody)."""
    text = unicodedata.normalize("NFC", text)
    if task == "asr":
        text = "".join(" " if ch in PUNCTUATION else ch for ch in text)
    text = re.sub(r"\s+", " ", text).strip()
    # No spaces between Chinese characters: "你 好" and "你好" must be the same label.
    return re.sub(r"(?<=[\u3400-\u9fff]) (?=[\u3400-\u9fff])", "", text)


def load_vocabulary(vocab: str | Path | set[str] | None) -> set[str] | None:
    """A vocabulary file (all characters in it, one per line or not) or a set of characters."""
    if vocab is None or isinstance(vocab, set):
        return vocab
    path = Path(vocab)
    if not path.is_file():
        raise HackathonError(f"{path}: vocabulary file not found", fix="pass a UTF-8 file listing the allowed characters")
    return set(path.read_text(encoding="utf-8").replace("\n", "")) | {" "}


def check_text(text: str | None, task: str, vocabulary: set[str] | None) -> tuple[str, Rejection | None]:
    """Normalised text, or a Rejection (empty / out of vocabulary). Missing is handled by the caller."""
    if text is None or not text.strip():
        return "", Rejection("", "empty_transcript", "transcript is empty or whitespace only", FIXES["empty_transcript"])
    clean = normalize_transcript(text, task)
    bad = sorted({ch for ch in clean if not (ch in vocabulary if vocabulary else default_vocabulary_ok(ch, task))})
    if bad:
        shown = " ".join(repr(c) for c in bad[:10])
        return clean, Rejection("", "out_of_vocabulary", f"characters outside the vocabulary: {shown} in {clean!r}",
                                FIXES["out_of_vocabulary"])
    if not clean:
        return "", Rejection("", "empty_transcript", "transcript holds only punctuation", FIXES["empty_transcript"])
    return clean, None


# ---------------------------------------------------------------- audio checks (run in worker processes)

def _reject(job: ClipJob, kind: str, reason: str) -> ClipResult:
    return ClipResult(job, Rejection(job.src, kind, f"{job.src}: {reason}", FIXES[kind]))


def _audio_problem(audio: np.ndarray, sr: int, settings: Settings) -> tuple[str, str] | None:
    duration = len(audio) / sr
    if float(np.max(frame_energies_db(audio, sr))) < SILENT_DBFS:
        return "silent", f"no sound: loudest moment is below {SILENT_DBFS:.0f} dBFS"
    clipped = float(np.mean(np.abs(audio) >= 0.999))
    if clipped > MAX_CLIPPED_FRACTION:
        return "clipped", f"clipped: {100 * clipped:.2f}% of samples at full scale"
    if duration < settings.min_duration:
        return "too_short", f"too short: {duration:.2f} s < {settings.min_duration} s"
    if duration > settings.max_duration:
        return "too_long", f"too long: {duration:.1f} s > {settings.max_duration} s"
    return None


def _process_clip(args: tuple[ClipJob, Settings]) -> ClipResult:
    job, settings = args
    try:
        audio, sr = read_audio(job.src, check_truncation=True)
    except AudioReadError as exc:
        return _reject(job, exc.kind, exc.message.split(": ", 1)[-1])
    except Exception as exc:  # a decoder crash on one file must not stop the batch
        return _reject(job, "decode_error", f"{type(exc).__name__}: {exc}")
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    mono = to_mono(audio)
    problem = _audio_problem(mono, sr, settings)
    if problem:
        return _reject(job, *problem)
    flags, cleaning = [], None
    if settings.clean:
        mono, report = clean_tts_clip(mono, sr)
        cleaning = report.as_dict()
        if report.noisy:
            flags.append(f"noisy: estimated SNR {report.snr_db:.0f} dB < {NOISY_SNR_DB:.0f} dB")
        if len(mono) / sr < settings.min_duration:
            return _reject(job, "too_short", f"too short after trimming silence: {len(mono) / sr:.2f} s")
    if settings.task == "tts":
        mismatch = rate_mismatch(sr, settings.sample_rate)
        if mismatch:
            flags.append(mismatch)
    out = resample(mono, sr, settings.sample_rate)
    pcm = (np.clip(out, -1, 1) * 32767).astype("<i2").tobytes()
    write_wav(job.dst, out, settings.sample_rate)
    return ClipResult(job, duration=len(out) / settings.sample_rate, pcm_sha1=hashlib.sha1(pcm).hexdigest(),
                      source_rate=sr, source_channels=channels, flags=flags, cleaning=cleaning)


# ---------------------------------------------------------------- discovery

def _safe_name(rel: str) -> str:
    return re.sub(r"[^\w.-]+", "_", rel.replace("/", "__"))


def _discover(src: Path, source: TranscriptSource) -> tuple[list[tuple[Path, str]], list[Rejection]]:
    """(audio path, path relative to SRC) for every clip, plus rejections for non-audio files."""
    if source.manifest_clips:
        base = source.clip_base or src.parent
        return [(p, os.path.relpath(p, base)) for p in source.manifest_clips], []
    clips, rejected = [], []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(src).as_posix()
            suffix = path.suffix.lower()
            if name.startswith(".") or suffix in TRANSCRIPT_EXTENSIONS or suffix in IGNORED_EXTENSIONS:
                continue
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                rejected.append(Rejection(repr(str(path)), "unreadable_path", f"{path!r}: file name is not valid UTF-8",
                                          "rename the file using UTF-8 (e.g. convmv -f GBK -t UTF-8)"))
                continue
            if suffix not in AUDIO_EXTENSIONS:
                rejected.append(Rejection(str(path), "not_audio", f"{path}: not an audio file type ({suffix or 'no extension'})",
                                          FIXES["not_audio"]))
                continue
            clips.append((path, rel))
    return clips, rejected


def _plan_jobs(src: Path, out_dir: Path, task: str, source: TranscriptSource,
               vocabulary: set[str] | None) -> tuple[list[ClipJob], list[Rejection]]:
    clips, rejected = _discover(src, source)
    rejected += source.rejected
    jobs, used_names = [], set()
    for path, rel in clips:
        text, speaker, bad_encoding = source.lookup(rel)
        if text is None and not bad_encoding and not source.manifest_clips:
            text, utf8 = _side_transcript(path)
            bad_encoding = not utf8
        if bad_encoding:
            rejected.append(Rejection(str(path), "not_utf8", f"{path}: transcript is not UTF-8 text", FIXES["not_utf8"]))
            continue
        if text is None:
            rejected.append(Rejection(str(path), "missing_transcript", f"{path}: no transcript found for this clip",
                                      FIXES["missing_transcript"]))
            continue
        clean, problem = check_text(text, task, vocabulary)
        if problem:
            problem.path, problem.reason = str(path), f"{path}: {problem.reason}"
            rejected.append(problem)
            continue
        if speaker is None and "/" in rel:
            speaker = rel.split("/", 1)[0]  # src/<speaker>/clip.wav: the common recording layout
        name = _safe_name(rel.rsplit(".", 1)[0])
        if name in used_names:  # a.wav and a.mp3 side by side
            name = _safe_name(rel)
        used_names.add(name)
        jobs.append(ClipJob(str(path), rel, str(out_dir / "wavs" / f"{name}.wav"), clean, speaker))
    return jobs, rejected


# ---------------------------------------------------------------- main entry

def _guard_paths(src: Path, out_dir: Path) -> None:
    if not src.exists():
        raise HackathonError(f"{src}: source folder not found", fix="pass the folder holding the recordings")
    if src.is_dir() and (out_dir == src or src in out_dir.parents):
        raise HackathonError(f"{out_dir}: output folder is inside the source {src}",
                             fix="choose --out outside SRC (SRC is never modified)")
    if src.is_file() and src.parent == out_dir and src.name in (MANIFEST_NAME, REPORT_NAME):
        raise HackathonError(f"{out_dir}: would overwrite the input manifest {src}",
                             fix="choose another --out")
    if out_dir.exists() and any(out_dir.iterdir()):
        stamp = read_json(out_dir / REPORT_NAME) or {}
        if stamp.get("tool") != "prepare-audio":
            raise HackathonError(f"{out_dir}: folder is not empty and was not made by prepare-audio",
                                 fix="pass --out with a new or empty folder")


def _deduplicate(results: list[ClipResult]) -> list[Rejection]:
    """Keep the first clip (sorted path order) of each identical recording; delete the copies' WAVs."""
    seen: dict[str, str] = {}
    rejected = []
    for result in results:
        if result.rejection or not result.pcm_sha1:
            continue
        first = seen.setdefault(result.pcm_sha1, result.job.src)
        if first != result.job.src:
            result.rejection = Rejection(result.job.src, "duplicate", f"{result.job.src}: same audio as {first}",
                                         FIXES["duplicate"])
            Path(result.job.dst).unlink(missing_ok=True)
            rejected.append(result.rejection)
    return rejected


def prepare_audio(src: str | Path, out_dir: str | Path, task: str = "asr", sample_rate: int | None = None,
                  transcripts: str | Path | None = None, vocabulary: str | Path | set[str] | None = None,
                  clean: bool | None = None, min_duration: float | None = None, max_duration: float | None = None,
                  workers: int | None = None) -> PrepareResult:
    """Validate + convert SRC into OUT (wavs/, manifest.json, report.json). See module docstring."""
    if task not in TASK_DEFAULTS:
        raise HackathonError(f"unknown task {task!r} for prepare-audio", fix="use --task asr or --task tts")
    started = time.perf_counter()
    defaults = TASK_DEFAULTS[task]
    settings = Settings(task, int(sample_rate or defaults["sample_rate"]),
                        float(defaults["min_duration"] if min_duration is None else min_duration),
                        float(defaults["max_duration"] if max_duration is None else max_duration),
                        bool(defaults["clean"] if clean is None else clean))
    src, out_dir = Path(src).resolve(), Path(out_dir).resolve()
    _guard_paths(src, out_dir)
    shutil.rmtree(out_dir / "wavs", ignore_errors=True)  # our own earlier output (guarded above)
    (out_dir / "wavs").mkdir(parents=True, exist_ok=True)

    source = load_transcripts(src, Path(transcripts) if transcripts else None)
    jobs, rejected = _plan_jobs(src, out_dir, task, source, load_vocabulary(vocabulary))
    results = map_clips(_process_clip, [(job, settings) for job in jobs], workers)
    rejected += [r.rejection for r in results if r.rejection]
    rejected += _deduplicate(results)
    accepted = [r for r in results if not r.rejection]

    entries = [ManifestEntry(r.job.dst, r.duration, r.job.text, r.job.speaker) for r in accepted]
    manifest_path = write_manifest(out_dir / MANIFEST_NAME, entries)
    flagged = [{"path": r.job.src, "flags": r.flags} for r in accepted if r.flags]
    report = _build_report(src, out_dir, settings, results, accepted, rejected, flagged, started)
    report_path = atomic_write_json(out_dir / REPORT_NAME, report)
    return PrepareResult(out_dir, manifest_path, report_path, len(accepted), report["rejected"], flagged,
                         report["hours"], settings.sample_rate)


def _build_report(src: Path, out_dir: Path, settings: Settings, results: list[ClipResult], accepted: list[ClipResult],
                  rejected: list[Rejection], flagged: list[dict], started: float) -> dict:
    by_kind = dict(Counter(r.kind for r in rejected))
    note = dataset_rate_note(settings.sample_rate) if settings.task == "tts" else None
    rates = sorted({r.source_rate for r in accepted})
    return {
        "tool": "prepare-audio",
        "src": str(src), "out_dir": str(out_dir), "task": settings.task,
        "settings": asdict(settings),
        "counts": {"found": len(accepted) + len(rejected), "accepted": len(accepted), "rejected": len(rejected),
                   "flagged": len(flagged)},
        "rejected_by_kind": by_kind,
        "hours": round(sum(r.duration for r in accepted) / 3600, 4),
        "source_rates_hz": rates,
        "rejected": [r.as_dict() for r in sorted(rejected, key=lambda r: r.path)],
        "flagged": flagged,
        "cleaned": [{"path": r.job.src, **r.cleaning} for r in accepted if r.cleaning],
        "notes": [note] if note else [],
        "seconds": round(time.perf_counter() - started, 2),
    }


def prepare_audio_for_task(src: str | Path, out_dir: str | Path, task: str, sample_rate: int | None = None,
                           val: float = 0.1, test: float = 0.1, seed: int = 0, split_phrases: bool = False,
                           **options) -> dict[str, Path]:
    """What a pipeline's prepare stage calls: prepare-audio (+ phrase-split) + seeded split.

    Returns {"train"|"val"|"test": manifest path} under out_dir. Rejected inputs do not stop the run
    (they are listed in out_dir/report.json and logged); no usable clip at all is an error.
    """
    from data_tools.audio_split import split_manifest
    from hackathon.core.logs import get_logger

    log = get_logger("hackathon.data")
    out_dir = Path(out_dir)
    result = prepare_audio(src, out_dir, task=task, sample_rate=sample_rate, **options)
    if result.rejected:
        log.warning("prepare-audio rejected %d input(s) of %s; reasons and fixes in %s", len(result.rejected), src,
                    result.report_path)
    if result.accepted == 0:
        raise HackathonError(f"{src}: no usable clip (all {len(result.rejected)} inputs rejected)",
                             fix=f"read {result.report_path} for each file's reason and fix")
    manifest = result.manifest_path
    if split_phrases:
        from data_tools.phrase_split import phrase_split

        manifest = phrase_split(manifest, out_dir / "phrases").manifest_path
    split = split_manifest(manifest, out_dir, fractions=(1.0 - val - test, val, test), seed=seed, overwrite=True)
    return split.manifests
