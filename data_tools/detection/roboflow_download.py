"""`hackathon detect roboflow-download WORKSPACE PROJECT VERSION --format coco|voc|yolov5`.

Needs the optional extra `roboflow` (kept out of [all]: it pins an old typer/requests) and the API key in
$ROBOFLOW_API_KEY (never on the command line, never logged). Downloads into a temp folder next to
--out and renames it into place only when complete, so an existing folder is never overwritten and an
interrupted download leaves nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hackathon.core.errors import HackathonError
from hackathon.core.logs import register_secret

FORMATS = {"coco": "coco", "voc": "voc", "yolov5": "yolov5"}
KEY_ENV = "ROBOFLOW_API_KEY"


def _api_key() -> str:
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise HackathonError(f"${KEY_ENV} is not set.",
                             fix=f"export {KEY_ENV}=... (Roboflow > Settings > Roboflow API); it is read from the "
                                 "environment only, so it never lands in your shell history or our logs.")
    register_secret(key)
    return key


def _roboflow_module():
    try:
        import roboflow  # noqa: F401 - optional extra
    except ImportError:
        raise HackathonError("The `roboflow` package is not installed.",
                             fix="pip install 'roboflow>=1.1' (the project's 'roboflow' extra; it pins typer<0.26, so a separate venv is safest).")
    return roboflow


def download(workspace: str, project: str, version: int, fmt: str, out_dir: str | os.PathLike) -> Path:
    """Download one Roboflow dataset version to out_dir (which must not exist or be empty)."""
    if fmt not in FORMATS:
        raise HackathonError(f"Unknown Roboflow format {fmt!r}.", fix=f"Use one of {', '.join(FORMATS)}.")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise HackathonError(f"{out} already exists and is not empty; not overwriting it.", fix="Choose a new --out folder.")
    key = _api_key()
    roboflow = _roboflow_module()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        try:
            rf = roboflow.Roboflow(api_key=key)
            rf.workspace(workspace).project(project).version(int(version)).download(FORMATS[fmt], location=str(tmp),
                                                                                     overwrite=True)
        except HackathonError:
            raise
        except Exception as exc:  # requests/urllib3 connection errors, auth errors, missing project ...
            text = str(exc).replace(key, "****")
            offline = any(w in text.lower() for w in ("connection", "resolve", "timed out", "unreachable", "max retries"))
            raise HackathonError(
                f"Roboflow download of {workspace}/{project} v{version} failed: {type(exc).__name__}: {text[:300]}",
                fix=("api.roboflow.com is not reachable from this machine (offline?): download on a connected machine "
                     "and copy the folder here, then `hackathon detect ingest`." if offline else
                     f"Check the workspace/project/version names and that ${KEY_ENV} is valid.")) from None
        if not any(tmp.iterdir()):
            raise HackathonError(f"Roboflow returned no files for {workspace}/{project} v{version}.",
                                 fix="Check that the version has a generated export in that format on roboflow.com.")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
