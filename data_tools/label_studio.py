"""Label Studio's own JSON export (what its Export button or `hackathon label studio --export` writes),
read for `detect ingest` (data_tools/detection/formats.py) and `prepare-audio` (data_tools/prepare_audio.py).

An export is a JSON list of tasks: {"id", "data": {"image"|"audio": URL}, "annotations": [{"id",
"result": [...], "was_cancelled", "completed_by", "updated_at"}], "predictions": [...]}. Media URLs are
local-files links `/data/local-files/?d=<path under LOCAL_FILES_DOCUMENT_ROOT>` (our server uses "/" as
that root), uploads `/data/upload/<project>/<name>`, or plain paths. Predictions are never labels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from hackathon.core.atomic import read_json_list

IMAGE_KEYS = ("image", "img", "photo")
AUDIO_KEYS = ("audio", "wav", "sound")

# kind -> fix, for the tasks an export holds that give no label (the readers name each one)
FIXES = {
    "skipped_task": "the annotator pressed Skip: label it in Label Studio (or leave it out) and export again",
    "unlabelled_task": "nobody has submitted it yet: label it in Label Studio and export again",
    "empty_annotation": "submitted with nothing drawn/typed: left out; label it in Label Studio and export again",
    "missing_media": "the file was moved or deleted after it was imported: put it back at that path, "
                     "or delete the task in Label Studio",
    "rotated_box": "its axis-aligned bounding box is used; set rotation back to 0 in Label Studio for an exact box",
}


def is_export(path: Path) -> bool:
    """A JSON list of Label Studio tasks (each with `data` and `annotations`)."""
    data = read_json_list(path)
    return bool(data) and all(
        isinstance(t, dict) and isinstance(t.get("data"), dict) and "annotations" in t for t in data)


def load_tasks(path: Path, keys: tuple[str, ...]) -> list[dict]:
    """The tasks of an export whose data holds a media URL under one of `keys` (image or audio)."""
    return [t for t in json.loads(path.read_text(encoding="utf-8")) if media_url(t, keys)]


def media_url(task: dict, keys: tuple[str, ...]) -> str | None:
    data = task.get("data") or {}
    return next((str(data[k]) for k in keys if isinstance(data.get(k), str) and data[k]), None)


def resolve_media(url: str, export_path: Path) -> Path:
    """Local path behind a task's media URL (it may not exist; the caller reports that)."""
    parsed = urlparse(url)
    if parsed.path.rstrip("/").endswith("/data/local-files") and "d" in parse_qs(parsed.query):
        rel = unquote(parse_qs(parsed.query)["d"][0]).lstrip("/")
        roots = [Path(os.environ.get("LOCAL_FILES_DOCUMENT_ROOT", "/")), Path("/"), export_path.parent]
        return next((r / rel for r in roots if (r / rel).exists()), roots[0] / rel)
    if "/data/upload/" in parsed.path:
        rel = parsed.path.split("/data/upload/", 1)[1]
        base = Path(os.environ.get("LABEL_STUDIO_BASE_DATA_DIR", export_path.parent)) / "media" / "upload"
        return base / unquote(rel)
    p = Path(unquote(parsed.path if parsed.scheme in ("", "file") else url))
    return p if p.is_absolute() else export_path.parent / p


def pick_annotation(task: dict) -> tuple[dict | None, str | None, str]:
    """(the annotation to use, problem kind or None, detail): the newest one not cancelled."""
    anns = task.get("annotations") or []
    usable = [a for a in anns if not a.get("was_cancelled")]
    if not anns:
        return None, "unlabelled_task", "no annotation submitted (predictions are not labels)"
    if not usable:
        return None, "skipped_task", f"skipped (was_cancelled) by user {anns[-1].get('completed_by')}"
    ann = max(usable, key=lambda a: (str(a.get("updated_at") or ""), a.get("id") or 0))
    if not ann.get("result"):
        return None, "empty_annotation", f"annotation {ann.get('id')} has an empty result"
    return ann, None, ""


def where(export_path: Path, task: dict) -> str:
    return f"{export_path}#task {task.get('id')}"
