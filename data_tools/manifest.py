"""NeMo JSONL manifests: one JSON object per line with audio_filepath, duration, text[, speaker].

This is the audio interchange format of the project (ASR and TTS pipelines, prepare-audio, phrase-split,
split, report all read and write it). Entries are small dataclasses, Lhotse-style, so code says
`entry.duration` instead of `row["duration"]`; unknown keys survive a read/write round trip in `extra`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from hackathon.core.atomic import atomic_write_jsonl
from hackathon.core.errors import HackathonError

REQUIRED_KEYS = ("audio_filepath", "duration", "text")


@dataclass
class ManifestEntry:
    """One clip: absolute audio path, duration in seconds, transcript, optional speaker."""

    audio_filepath: str
    duration: float
    text: str
    speaker: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"audio_filepath": self.audio_filepath, "duration": round(float(self.duration), 4),
                               "text": self.text}
        if self.speaker is not None:
            row["speaker"] = self.speaker
        row.update(self.extra)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "ManifestEntry":
        speaker = row.get("speaker")
        extra = {k: v for k, v in row.items() if k not in REQUIRED_KEYS and k != "speaker"}
        return cls(audio_filepath=str(row["audio_filepath"]), duration=float(row["duration"]),
                   text=str(row["text"]), speaker=None if speaker is None else str(speaker), extra=extra)


def _parse_line(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HackathonError(f"{path}:{lineno}: broken JSON in manifest ({exc.msg} at column {exc.colno})",
                             fix="each line must be one JSON object; fix or delete that line") from exc
    if not isinstance(row, dict):
        raise HackathonError(f"{path}:{lineno}: manifest line is not a JSON object",
                             fix='write lines like {"audio_filepath": ..., "duration": ..., "text": ...}')
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise HackathonError(f"{path}:{lineno}: manifest entry lacks {', '.join(missing)}",
                             fix="NeMo manifests need audio_filepath, duration and text on every line")
    try:
        float(row["duration"])
    except (TypeError, ValueError) as exc:
        raise HackathonError(f"{path}:{lineno}: duration {row['duration']!r} is not a number",
                             fix="durations are seconds as a number, e.g. 2.35") from exc
    return row


def read_manifest(path: str | os.PathLike, resolve_relative: bool = True) -> list[ManifestEntry]:
    """Read a NeMo JSONL manifest. Relative audio paths are resolved against the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise HackathonError(f"{path}: manifest not found", fix="pass the path of a NeMo JSONL manifest")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HackathonError(f"{path}: manifest is not UTF-8 text", fix="re-save it as UTF-8") from exc
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        entry = ManifestEntry.from_dict(_parse_line(path, lineno, line))
        if resolve_relative and not os.path.isabs(entry.audio_filepath):
            entry.audio_filepath = str((path.parent / entry.audio_filepath).resolve())
        entries.append(entry)
    return entries


def write_manifest(path: str | os.PathLike, entries: Iterable[ManifestEntry | dict[str, Any]]) -> Path:
    """Write entries as NeMo JSONL, atomically (readers never see half a manifest)."""
    rows = [e.to_dict() if isinstance(e, ManifestEntry) else ManifestEntry.from_dict(e).to_dict() for e in entries]
    return atomic_write_jsonl(path, rows)


def total_hours(entries: Iterable[ManifestEntry]) -> float:
    return sum(e.duration for e in entries) / 3600.0
