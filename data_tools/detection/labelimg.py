"""`hackathon label IMAGES`: open labelImg on a folder of images with the canonical classes and VOC output.

Why a separate Python: labelImg 1.8.6 (the last release) crashes on Python >= 3.10 as soon as a box is
drawn — its canvas passes floats to PyQt5's QPainter.drawLine/drawRect/QPoint, and Python 3.10 removed
the implicit float -> int conversion (`__int__`, bpo-37999), so PyQt5 raises TypeError and the app exits.
So we run a labelImg installed in a Python <= 3.9 environment, found in this order:
  1. $HACKATHON_LABELIMG (path to a labelImg executable)
  2. ~/.local/share/hackathon/labelimg-py39/bin/labelImg   (what `hackathon label --setup` creates)
  3. ~/.pyenv/versions/3.{6,7,8,9}*/bin/labelImg
  4. labelImg on PATH
Each candidate's interpreter (from its #! line) is asked for its version; >= 3.10 ones are skipped.
To make one by hand:
  pyenv install 3.9 && ~/.pyenv/versions/3.9.*/bin/python -m venv ~/.local/share/hackathon/labelimg-py39
  ~/.local/share/hackathon/labelimg-py39/bin/pip install labelImg==1.8.6
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hackathon.core.atomic import atomic_write_text
from hackathon.core.errors import HackathonError
from hackathon.core.paths import user_data_dir

LABELIMG_VERSION = "1.8.6"
DEFAULT_ENV = user_data_dir() / "labelimg-py39"
CLASSES_FILE_NAME = "classes.txt"
MANUAL_FIX = ("Make a Python 3.9 labelImg: `pyenv install 3.9 && ~/.pyenv/versions/3.9.*/bin/python -m venv "
              f"{DEFAULT_ENV} && {DEFAULT_ENV}/bin/pip install labelImg=={LABELIMG_VERSION}` "
              "(or run `hackathon label --setup`), or set HACKATHON_LABELIMG to a labelImg from Python <= 3.9.")


def candidate_executables() -> list[Path]:
    found: list[Path] = []
    if os.environ.get("HACKATHON_LABELIMG"):
        found.append(Path(os.environ["HACKATHON_LABELIMG"]).expanduser())
    found.append(DEFAULT_ENV / "bin" / "labelImg")
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        found += sorted(pyenv.glob("3.*/bin/labelImg"), reverse=True)
        found += sorted(pyenv.glob("*/envs/*/bin/labelImg"), reverse=True)
    on_path = shutil.which("labelImg")
    if on_path:
        found.append(Path(on_path))
    return found


def interpreter_version(executable: Path) -> tuple[int, int] | None:
    """(major, minor) of the Python that runs `executable` (a console script), or None if unknown."""
    try:
        first = executable.read_bytes()[:256].split(b"\n", 1)[0].decode(errors="replace")
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    python = first[2:].strip().split()
    try:
        out = subprocess.run([*python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=20)
        major, minor = out.stdout.strip().split(".")
        return int(major), int(minor)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def find_labelimg(candidates: list[Path] | None = None) -> tuple[Path, tuple[int, int], list[str]]:
    """(executable, python version, notes about skipped candidates); HackathonError when none is usable."""
    notes = []
    for exe in candidates if candidates is not None else candidate_executables():
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            continue
        version = interpreter_version(exe)
        if version is None:
            notes.append(f"{exe}: cannot tell its Python version; skipped")
        elif version >= (3, 10):
            notes.append(f"{exe}: Python {version[0]}.{version[1]} — labelImg {LABELIMG_VERSION} crashes there when a box is drawn; skipped")
        else:
            return exe, version, notes
    raise HackathonError("No labelImg from a Python <= 3.9 environment found" + (f" ({'; '.join(notes)})" if notes else "") + ".",
                         fix=MANUAL_FIX)


def _old_python() -> Path | None:
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in (9, 8, 7):
        for p in sorted(pyenv.glob(f"3.{minor}.*/bin/python3.{minor}"), reverse=True) if pyenv.is_dir() else []:
            return p
        w = shutil.which(f"python3.{minor}")
        if w:
            return Path(w)
    return None


def setup_labelimg(env_dir: Path = DEFAULT_ENV) -> Path:
    """Create env_dir with a Python <= 3.9 and pip-install labelImg there; return the executable."""
    python = _old_python()
    if python is None:
        raise HackathonError("No Python 3.7-3.9 found to build a labelImg environment.",
                             fix="Install one (`pyenv install 3.9`), then run `hackathon label --setup` again. " + MANUAL_FIX)
    if not (env_dir / "bin" / "python").exists():
        subprocess.run([str(python), "-m", "venv", str(env_dir)], check=True)
    result = subprocess.run([str(env_dir / "bin" / "pip"), "install", f"labelImg=={LABELIMG_VERSION}"])
    exe = env_dir / "bin" / "labelImg"
    if result.returncode != 0 or not exe.exists():
        raise HackathonError(f"pip could not install labelImg=={LABELIMG_VERSION} into {env_dir}.",
                             fix="Check the pip output above (PyQt5 needs a wheel for this Python/CPU).")
    return exe


def write_classes_file(target: Path, classes: list[str]) -> Path:
    """labelImg's predefined classes file. An existing file with other content is left alone and reported."""
    text = "\n".join(classes) + "\n"
    if target.exists() and target.read_text(encoding="utf-8") != text:
        raise HackathonError(f"{target} exists with other classes; not overwriting it.",
                             fix=f"Move it away, or pass --classes-file {target} to use it as it is.")
    if not target.exists():
        atomic_write_text(target, text)
    return target


def label_command(images: Path, save_dir: Path | None = None, classes_file: Path | None = None,
                  executable: Path | None = None) -> tuple[list[str], list[str]]:
    """(argv that opens labelImg on `images`, notes). Writes the canonical classes file when not given."""
    from data_tools.detection.classes import AliasTable

    images = images.resolve()
    folder = images if images.is_dir() else images.parent
    if not folder.is_dir():
        raise HackathonError(f"Image folder {images} does not exist.", fix="Give a folder of images (or one image in it).")
    save_dir = (save_dir or folder).resolve()
    save_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if classes_file is None:
        classes_file = write_classes_file(save_dir / CLASSES_FILE_NAME, list(AliasTable.load().classes))
    elif not classes_file.is_file():
        raise HackathonError(f"Classes file {classes_file} does not exist.", fix="Omit --classes-file to use the canonical classes.")
    if executable is None:
        executable, version, notes = find_labelimg()
        notes.append(f"using {executable} (Python {version[0]}.{version[1]})")
    # labelImg 1.8.6 argv: [IMAGE_DIR] [PREDEFINED_CLASSES_FILE] [SAVE_DIR]; it saves PASCAL VOC by default.
    return [str(executable), str(folder), str(classes_file.resolve()), str(save_dir)], notes


def launch(images: Path, save_dir: Path | None = None, classes_file: Path | None = None, dry_run: bool = False) -> list[str]:
    """Open labelImg and wait for it to close; returns the argv used."""
    argv, notes = label_command(images, save_dir, classes_file)
    for n in notes:
        print(n)
    if dry_run:
        return argv
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
        raise HackathonError("No display: labelImg is a desktop app (DISPLAY/WAYLAND_DISPLAY are not set).",
                             fix="Run it on the workstation's desktop, or over `ssh -X`; --dry-run prints the command.")
    result = subprocess.run(argv)
    if result.returncode != 0:
        raise HackathonError(f"labelImg exited with status {result.returncode}.", fix="See its messages above.")
    return argv


def run_label_command(images: Path | None, save_dir: Path | None = None, classes_file: Path | None = None,
                      setup: bool = False, dry_run: bool = False) -> str:
    """`hackathon label`: optional setup, then launch (or print) labelImg. Returns a one-line summary."""
    done = []
    if setup:
        done.append(f"labelImg ready: {setup_labelimg()}")
    if images is None:
        if not setup:
            raise HackathonError("No image folder given.", fix="hackathon label IMAGES_DIR (or --setup to only install labelImg).")
        return "; ".join(done)
    argv = launch(images, save_dir, classes_file, dry_run=dry_run)
    done.append(("would run: " if dry_run else "ran: ") + " ".join(argv))
    return "; ".join(done)
