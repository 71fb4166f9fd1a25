"""Content fingerprints of files, directories and config slices (what decides if a stage re-runs)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def path_fingerprint(path: str | os.PathLike, content: bool = False) -> str:
    """Fingerprint a file or a directory tree.

    content=False hashes (name, size, mtime) — cheap for thousands of clips/images;
    content=True hashes the bytes.
    """
    path = Path(path)
    h = hashlib.sha256()
    if not path.exists():
        h.update(f"missing:{path}".encode())
        return h.hexdigest()
    files: Iterable[Path] = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update((file_sha256(f) if content else _stat_key(f)).encode())
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
    return h.hexdigest()


def obj_fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able object (config slices)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def combine(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
