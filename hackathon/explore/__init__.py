"""`hackathon explore`: static pages to browse a speech or detection dataset, its predictions and errors.

The out dir is self-contained and opens from disk (file://), no server:
    index.html + speech.js|detect.js + explore.css   templates copied from hackathon/explore/templates/
    data.js      window.EXPLORE = {...}: every row/image, totals, histograms (a <script>, because browsers
                 refuse fetch() of local files; one file of ~2 MB parses in tens of ms for 10 000 rows)
    media/       symlinks to the audio/images (relative links into the user's data: nothing is copied,
                 nothing of the user's is touched; moving the data breaks them, rebuilding fixes that)
Waveforms and spectrograms are drawn by the page from the decoded audio when a row is opened. Browsers
only let a page decode audio bytes it fetched over http, so from disk the page plays audio and shows the
rest; `--serve` serves the out dir on 127.0.0.1 for the waveform/spectrogram too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from hackathon.core.atomic import atomic_write_text
from hackathon.core.errors import HackathonError

TEMPLATES = Path(__file__).parent / "templates"
MARKER = "explore.json"  # an out dir with this file was written by us and may be rebuilt


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise HackathonError(f"{out} exists and is not an explorer folder; nothing was written.",
                             fix="Pass a new or empty --out folder (an explorer folder is rebuilt in place).")
    if (out / "media").is_dir():
        shutil.rmtree(out / "media")  # only our symlinks live here
    (out / "media").mkdir(parents=True, exist_ok=True)


def _link(out: Path, target: str, name: str) -> str:
    """media/<name> -> target (relative symlink); returns the page's relative URL."""
    link = out / "media" / name
    target_path = Path(target).resolve()
    os.symlink(os.path.relpath(target_path, link.parent), link)
    return f"media/{name}"


def build(inputs: list[str | os.PathLike], out: str | os.PathLike, compare: str | os.PathLike | None = None) -> Path:
    """Write the explorer for `inputs` (run dirs or manifests / dataset.json) into `out`; returns index.html."""
    from hackathon.explore.detect import detect_data, is_detect_run
    from hackathon.explore.speech import speech_data

    paths = [Path(p).expanduser().resolve() for p in inputs]
    for p in paths:
        if not p.exists():
            raise HackathonError(f"{p} does not exist.", fix="Pass run dirs, NeMo manifests or a dataset.json.")
    out = Path(out).expanduser().resolve()
    detect = [p for p in paths if is_detect_run(p) or (p.is_file() and _is_coco(p))]
    if detect and len(detect) != len(paths):
        raise HackathonError("Speech and detection inputs cannot share one explorer.",
                             fix="Run `hackathon explore` once per kind, with a different --out each.")
    if detect and compare:
        raise HackathonError("--compare is for ASR runs.", fix="Drop --compare for detection inputs.")
    data = detect_data(paths) if detect else speech_data(paths, Path(compare).resolve() if compare else None)
    _prepare_out(out)
    if data["kind"] == "speech":
        for r in data["rows"]:
            r["audio"] = _link(out, r["audio"], f"a{r['id']}{Path(r['audio']).suffix}")
            if "tts" in r:
                for key in ("synth", "copy"):
                    r["tts"][key] = _link(out, r["tts"][key], f"{key[0]}{r['id']}.wav")
        page, script = "speech.html", "speech.js"
    else:
        for im in data["images"]:
            im["path"] = _link(out, im["path"], f"i{im['id']}{Path(im['path']).suffix}")
        page, script = "detect.html", "detect.js"
    for name in ("explore.css", script):
        atomic_write_text(out / name, (TEMPLATES / name).read_text(encoding="utf-8"))
    atomic_write_text(out / "data.js", "window.EXPLORE = " + json.dumps(data, ensure_ascii=False,
                                                                        separators=(",", ":")) + ";\n")
    atomic_write_text(out / "index.html", (TEMPLATES / page).read_text(encoding="utf-8"))
    atomic_write_text(out / MARKER, json.dumps({"kind": data["kind"], "sources": data["sources"]}, indent=1))
    return out / "index.html"


def _is_coco(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
    return head.lstrip().startswith("{") and ('"images"' in head or '"categories"' in head)


def serve(out: str | os.PathLike, port: int = 8765, host: str = "127.0.0.1") -> None:
    """Serve the out dir over http (127.0.0.1 unless told): the page can then decode audio for waveforms."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from hackathon.core.progress import terminal

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(out))
    with ThreadingHTTPServer((host, port), handler) as httpd:
        terminal().print(f"explorer at http://{host}:{httpd.server_address[1]}/index.html (Ctrl-C stops)", markup=False)
        httpd.serve_forever()
