"""Where things live: the repo's specs, the default runs directory, the demo data cache."""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECS_DIR = REPO_ROOT / "specs"
TASKS = ("asr", "tts", "detect")


def runs_root() -> Path:
    """Root of all run directories; HACKATHON_RUNS overrides (e.g. a shared disk on the workstation)."""
    return Path(os.environ.get("HACKATHON_RUNS", REPO_ROOT / "runs"))


def demo_data_root() -> Path:
    """Generated demo datasets are cached here (git-ignored); HACKATHON_DEMO_DATA overrides."""
    return Path(os.environ.get("HACKATHON_DEMO_DATA", REPO_ROOT / "demo_data"))


def user_data_dir() -> Path:
    """Per-user tool data (labelImg's and Label Studio's venvs, Label Studio's database): $XDG_DATA_HOME/hackathon."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "hackathon"


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry inside some containers
        return str(os.getuid())


def default_run_dir(task: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return runs_root() / task / f"{stamp}-{current_user()}"


def spec_path(task: str, name: str = "demo") -> Path:
    return SPECS_DIR / task / f"{name}.yaml"


def user_path(path: str | os.PathLike) -> Path:
    """A path the user wrote (spec, override, CLI): `~` expanded, a relative one taken from the working directory."""
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def data_sources(source) -> list[Path]:
    """`data.source` of any task as paths: [] for null (the demo), one path, or a list of them."""
    if source is None or source == "":
        return []
    return [user_path(s) for s in ([source] if isinstance(source, (str, os.PathLike)) else list(source))]
