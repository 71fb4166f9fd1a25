"""Atomic writes: write to a temp file in the same directory, fsync, then rename over the target.

A kill -9 at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from hackathon.core.errors import HackathonError


def _default_mode(target: Path) -> int:
    """The mode a plain open() would give: the target's current mode, else 0666 minus the umask.
    (mkstemp creates 0600 files, which would hide run results from the rest of the team.)"""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to `target`; on success it is renamed onto `target`.

    Use for writers that need a filename (soundfile, PIL, torch.save, ffmpeg): they write to the
    yielded path, and the rename happens only if the block finishes without an exception.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix + ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _default_mode(target))
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(target, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(target: str | os.PathLike, rows) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    return atomic_write_text(target, text)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def read_json_list(path: str | os.PathLike) -> list | None:
    """The list a JSON file holds, or None when it is unreadable or not a list (the first bytes tell, so
    large non-list files are not parsed): how format sniffers test a candidate file."""
    try:
        with open(path, "rb") as fh:
            if not fh.read(512).lstrip().startswith(b"["):
                return None
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


def read_jsonl(path: str | os.PathLike, missing_ok: bool = False) -> list:
    """The rows of a JSONL file (blank lines skipped); [] for a missing file when missing_ok."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rows += [json.loads(line)] if line.strip() else []
        except json.JSONDecodeError as exc:
            raise HackathonError(f"{path}:{lineno}: broken JSON ({exc.msg} at column {exc.colno})",
                                 fix="each line must be one JSON object: fix or delete that line") from exc
    return rows


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder next to `target`; on success it replaces `target` (a folder of model files
    appears whole or not at all). An existing `target` is moved aside first and removed after."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
