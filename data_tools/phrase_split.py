"""phrase-split: cut each sentence clip at its punctuation, by matching phrases to pauses in the audio.

"上午好，张伟，欢迎回家，二维码有效请您通过。" has 4 phrases, so the speaker pauses 3 times. We find
the silent gaps (20 ms-frame energy well below the clip's peak), and when exactly 3 gaps stand out
we cut at their centres. Output per clip: the whole sentence + one clip per phrase (4 phrases -> 5
samples), each with its text. When the pauses do not match the punctuation (too few, ambiguous, or
phrase lengths that cannot fit the text) the clip stays whole and the report says why.

    phrase_split(manifest, out_dir) -> PhraseSplitResult
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_tools.audio import map_clips, read_audio, to_mono, write_wav
from data_tools.manifest import ManifestEntry, read_manifest, write_manifest
from data_tools.tts_clean import frame_energies_db, trim_silence
from hackathon.core.atomic import atomic_write_json
from hackathon.core.errors import HackathonError

PHRASE_BREAKS = "，。、！？；,.!?;"
_BREAK_RE = re.compile(f"[{re.escape(PHRASE_BREAKS)}]+")
FRAME_S = 0.01
MIN_GAP_S = 0.12  # espeak/human comma pauses are >= ~150 ms; pauses between syllables < 80 ms
GAP_BELOW_PEAK_DB = 30.0  # a frame this far under the loudest one counts as pause
CLEAR_MARGIN = 1.5  # the chosen pauses must be this much longer than the best unchosen one
MAX_RATE_SPREAD = 4.0  # seconds-per-character of the phrases may differ at most this factor


@dataclass
class PhraseSplitResult:
    out_dir: Path
    manifest_path: Path
    report_path: Path
    samples: int
    split_clips: int
    left_whole: list[dict] = field(default_factory=list)


def split_text(text: str) -> list[str]:
    """Phrases of a transcript, punctuation removed: '您好，张伟。' -> ['您好', '张伟']."""
    return [p.strip() for p in _BREAK_RE.split(text) if p.strip()]


def find_pauses(audio: np.ndarray, sr: int, min_gap_s: float = MIN_GAP_S) -> list[tuple[float, float]]:
    """(start_s, end_s) of silent runs inside the clip (leading/trailing silence excluded)."""
    levels = frame_energies_db(audio, sr, FRAME_S)
    quiet = levels < max(-50.0, float(np.max(levels)) - GAP_BELOW_PEAK_DB)
    voiced = np.nonzero(~quiet)[0]
    if len(voiced) == 0:
        return []
    pauses, start = [], None
    for i in range(voiced[0], voiced[-1] + 1):
        if quiet[i] and start is None:
            start = i
        elif not quiet[i] and start is not None:
            if (i - start) * FRAME_S >= min_gap_s:
                pauses.append((start * FRAME_S, i * FRAME_S))
            start = None
    return pauses


def choose_cuts(pauses: list[tuple[float, float]], phrases: list[str], duration: float) -> tuple[list[float], str]:
    """Cut times (pause centres) for len(phrases)-1 breaks, or ([], why they cannot be matched)."""
    needed = len(phrases) - 1
    if len(pauses) < needed:
        return [], f"found {len(pauses)} pauses for {needed} phrase breaks"
    by_length = sorted(pauses, key=lambda p: p[1] - p[0], reverse=True)
    chosen, rest = by_length[:needed], by_length[needed:]
    if rest and (chosen[-1][1] - chosen[-1][0]) < CLEAR_MARGIN * (rest[0][1] - rest[0][0]):
        return [], f"{len(pauses)} pauses for {needed} phrase breaks and no clear {needed} longest"
    cuts = sorted((a + b) / 2 for a, b in chosen)
    bounds = [0.0, *cuts, duration]
    rates = [(bounds[i + 1] - bounds[i]) / max(1, len(p)) for i, p in enumerate(phrases)]
    if max(rates) > MAX_RATE_SPREAD * min(rates):
        return [], "pause positions do not fit the phrase lengths (seconds per character differ > 4x)"
    return cuts, ""


def _split_one(args: tuple[int, ManifestEntry, str, float]) -> tuple[list[ManifestEntry], dict | None]:
    """Whole + phrase entries for one clip, and a report row when it stays whole."""
    index, entry, out_dir, min_gap_s = args
    stem = f"{index:05d}_{Path(entry.audio_filepath).stem}"  # index: same names in different folders
    try:
        audio, sr = read_audio(entry.audio_filepath)
    except HackathonError as exc:
        return [], {"path": entry.audio_filepath, "text": entry.text, "reason": exc.message}
    audio = to_mono(audio)
    whole_path = Path(out_dir) / "wavs" / f"{stem}.wav"
    write_wav(whole_path, audio, sr)
    whole = ManifestEntry(str(whole_path), len(audio) / sr, entry.text, entry.speaker,
                          {**entry.extra, "phrase_index": -1})
    phrases = split_text(entry.text)
    if len(phrases) < 2:
        return [whole], None  # nothing to split: a one-phrase sentence is its own sample
    cuts, why = choose_cuts(find_pauses(audio, sr, min_gap_s), phrases, len(audio) / sr)
    if not cuts:
        return [whole], {"path": entry.audio_filepath, "text": entry.text, "reason": why}
    bounds = [0, *(int(c * sr) for c in cuts), len(audio)]
    entries = [whole]
    for i, text in enumerate(phrases):
        piece, _, _ = trim_silence(audio[bounds[i]:bounds[i + 1]], sr)
        path = Path(out_dir) / "wavs" / f"{stem}_p{i}.wav"
        write_wav(path, piece, sr)
        entries.append(ManifestEntry(str(path), len(piece) / sr, text, entry.speaker,
                                     {**entry.extra, "phrase_index": i, "whole": str(whole_path)}))
    return entries, None


def phrase_split(manifest: str | Path, out_dir: str | Path, min_gap_s: float = MIN_GAP_S,
                 workers: int | None = None) -> PhraseSplitResult:
    """Split every clip of `manifest` into whole + phrase clips under out_dir; see module docstring.

    Writes out_dir/wavs/*.wav, out_dir/manifest.json (NeMo JSONL; phrase_index -1 = whole sentence)
    and out_dir/phrase_split_report.json (clips left whole and why).
    """
    manifest, out_dir = Path(manifest).resolve(), Path(out_dir).resolve()
    entries = read_manifest(manifest)
    if manifest.parent == out_dir and manifest.name == "manifest.json":
        raise HackathonError(f"{out_dir}: would overwrite the input manifest", fix="pass a different --out")
    results = map_clips(_split_one, [(i, e, str(out_dir), min_gap_s) for i, e in enumerate(entries)], workers)
    samples = [s for clip_entries, _ in results for s in clip_entries]
    left_whole = [row for _, row in results if row]
    split_clips = sum(1 for clip_entries, _ in results if len(clip_entries) > 1)
    manifest_path = write_manifest(out_dir / "manifest.json", samples)
    report = {"tool": "phrase-split", "source_manifest": str(manifest), "clips": len(entries),
              "split_clips": split_clips, "samples": len(samples), "left_whole": left_whole}
    report_path = atomic_write_json(out_dir / "phrase_split_report.json", report)
    return PhraseSplitResult(out_dir, manifest_path, report_path, len(samples), split_clips, left_whole)
