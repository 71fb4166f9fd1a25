"""One self-contained report.html per run: config, stages and times, loss curves, metrics and the task's
pictures, audio and tables — everything embedded (base64), so the file can be mailed or opened offline.

Inputs, all read from the run dir: meta.json, config.yaml, metrics.json, report_assets.json (the task's
images/audio/tables, paths relative to the run dir), Lightning CSV logs (metrics.csv) and TensorBoard
event files anywhere under the run dir (usually logs/ or checkpoints/).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from hackathon.core.atomic import atomic_write_json, atomic_write_text, read_json
from hackathon.core.logs import get_logger, redact

log = get_logger("hackathon.report")

Series = dict[str, list[tuple[float, float]]]  # tag -> [(step, value)]

MAX_EMBED_BYTES = 25 * 1024 * 1024  # bigger files are linked, not embedded
MAX_TABLE_ROWS = 200
MAX_PLOTS_PER_SOURCE = 8
LOG_TAIL_LINES = 40
NOT_PLOTTED = {"epoch", "step", "global_step", "trainer/global_step", "hp_metric"}
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
        ".svg": "image/svg+xml", ".webp": "image/webp", ".wav": "audio/wav", ".mp3": "audio/mpeg",
        ".flac": "audio/flac", ".ogg": "audio/ogg"}
e = html.escape


# ----------------------------------------------------------------------------- training logs

def _source_name(run_dir: Path, path: Path) -> str:
    """Logs of one logger across resumes (version_0, version_1 or attempt-1, attempt-2 ...) share a name
    and are merged (global steps continue across them)."""
    rel = path.relative_to(run_dir).as_posix()
    return re.sub(r"/(version_|attempt-)\d+", "", rel)


def read_csv_log(path: Path) -> Series:
    """Lightning CSVLogger metrics.csv: sparse rows (each logged key fills only its own cells)."""
    series: Series = defaultdict(list)
    with open(path, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            try:
                step = float(row.get("step") or i)
            except ValueError:
                step = float(i)
            for tag, text in row.items():
                if tag is None or tag in NOT_PLOTTED or text in (None, ""):
                    continue
                try:
                    series[tag].append((step, float(text)))
                except ValueError:
                    continue
    return dict(series)


def read_tensorboard_dir(directory: Path) -> Series:
    """Scalars of all event files in one directory, via tensorboard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    series: Series = {}
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        series[tag] = [(float(ev.step), float(ev.value)) for ev in acc.Scalars(tag)]
    for tag in tags.get("tensors", []):  # TF2-style summaries keep scalars as 0-d tensors
        try:
            from tensorboard.util import tensor_util

            series.setdefault(tag, [(float(ev.step), float(tensor_util.make_ndarray(ev.tensor_proto)))
                                    for ev in acc.Tensors(tag)])
        except (TypeError, ValueError):
            continue
    return {t: v for t, v in series.items() if t not in NOT_PLOTTED}


def collect_training_logs(run_dir: Path) -> tuple[dict[str, Series], list[str]]:
    """{source name: series} from every metrics.csv and TensorBoard event dir in the run; plus notes."""
    sources: dict[str, Series] = defaultdict(lambda: defaultdict(list))
    notes: list[str] = []

    def merge(name: str, series: Series) -> None:
        for tag, points in series.items():
            sources[name][tag].extend(points)

    for csv_path in sorted(run_dir.rglob("metrics.csv")):
        try:
            merge(_source_name(run_dir, csv_path), read_csv_log(csv_path))
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            notes.append(f"could not read {csv_path.relative_to(run_dir)}: {exc}")
    event_dirs = sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")})
    for d in event_dirs:
        try:
            merge(_source_name(run_dir, d / "events"), read_tensorboard_dir(d))
        except ImportError:
            notes.append(f"TensorBoard logs in {d.relative_to(run_dir)} not plotted: the tensorboard package "
                         "is not installed (pip install tensorboard).")
        except Exception as exc:  # a torn event file from a killed run must not stop the report
            notes.append(f"could not read TensorBoard logs in {d.relative_to(run_dir)}: {exc}")
    cleaned = {}
    for name, series in sources.items():
        series = {t: sorted(p) for t, p in series.items() if p}
        if series:
            cleaned[name] = series
    return cleaned, notes


def plot_series(title: str, series: Series) -> bytes:
    """PNG: losses together in the first panel, every other scalar in its own panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = {t: p for t, p in series.items() if "loss" in t.lower()}
    others = [t for t in sorted(series) if t not in losses]
    panels: list[tuple[str, Series]] = ([("loss", losses)] if losses else [])
    panels += [(t, {t: series[t]}) for t in others]
    panels = panels[:MAX_PLOTS_PER_SOURCE]
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, group) in zip(axes.flat, panels):
        for tag, points in sorted(group.items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(points) < 30 else None, label=tag)
        values = [v for points in group.values() for _, v in points]
        if name == "loss" and min(values) > 0 and max(values) / min(values) > 50:
            ax.set_yscale("log")  # CTC/TTS losses fall by orders of magnitude: keep the tail readable
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(group) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------- HTML pieces

def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _html_table(rows: list[dict], max_rows: int = MAX_TABLE_ROWS) -> str:
    if not rows:
        return "<p><i>(empty)</i></p>"
    columns: list[str] = []
    for r in rows[:max_rows]:
        columns += [c for c in r if c not in columns]
    head = "".join(f"<th>{e(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{e(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows[:max_rows])
    more = f"<p><i>{len(rows) - max_rows} more rows not shown</i></p>" if len(rows) > max_rows else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _asset_file(run_dir: Path, rel: str) -> tuple[Path | None, str | None]:
    """(path, problem): a missing or oversized file is listed in the report, not fatal."""
    path = (run_dir / rel).resolve()
    if not path.is_file():
        return None, f"missing file {rel}"
    if path.stat().st_size > MAX_EMBED_BYTES:
        return None, f"{rel} is larger than {MAX_EMBED_BYTES >> 20} MiB: not embedded"
    return path, None


def _images_html(run_dir: Path, images: list[dict]) -> str:
    parts = []
    for item in images:
        path, problem = _asset_file(run_dir, str(item.get("path", "")))
        caption = e(str(item.get("caption") or item.get("path", "")))
        if problem:
            parts.append(f"<figure><p class=warn>{e(problem)}</p><figcaption>{caption}</figcaption></figure>")
            continue
        mime = MIME.get(path.suffix.lower(), "application/octet-stream")
        parts.append(f'<figure><img src="{_data_uri(path.read_bytes(), mime)}" alt="{caption}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    return "".join(parts)


def _audio_html(run_dir: Path, audio: list[dict]) -> str:
    rows = []
    for item in audio:
        path, problem = _asset_file(run_dir, str(item.get("path", "")))
        caption = e(str(item.get("caption") or item.get("path", "")))
        text = e(str(item.get("text") or ""))
        if problem:
            player = f"<span class=warn>{e(problem)}</span>"
        else:
            mime = MIME.get(path.suffix.lower(), "audio/wav")
            player = f'<audio controls preload="none" src="{_data_uri(path.read_bytes(), mime)}"></audio>'
        rows.append(f"<tr><td>{caption}</td><td>{player}</td><td>{text}</td></tr>")
    return "<table><tr><th>clip</th><th>listen</th><th>text</th></tr>" + "".join(rows) + "</table>"


def _stages_html(meta: dict) -> str:
    standard = {"status", "start", "end", "seconds", "attempts", "resumed", "error"}
    rows = []
    for name, entry in meta.get("stages", {}).items():
        extra = {k: v for k, v in entry.items() if k not in standard}
        rows.append({"stage": name, "status": entry.get("status", "-"), "seconds": entry.get("seconds", "-"),
                     "attempts": entry.get("attempts", "-"), "resumed": entry.get("resumed", False),
                     "start": entry.get("start", "-"), "end": entry.get("end", "-"),
                     "error": entry.get("error", ""), "recorded": extra or ""})
    return _html_table(rows)


def _run_log_tail(run_dir: Path) -> str:
    log_file = run_dir / "logs" / "run.log"
    if not log_file.exists():
        return ""
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"<h2>Last {len(lines)} lines of logs/run.log</h2><pre>{e(redact(chr(10).join(lines)))}</pre>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px} table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:14px} th{background:#eee}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px} figure{display:inline-block;margin:0 1em 1em 0}
img{max-width:100%} .warn{color:#b00} .status-done{color:#070} .status-failed{color:#b00}"""


def _read_json_or_note(path: Path, problems: list[str]) -> dict:
    """A torn or hand-edited JSON file is reported in the page, it does not stop the report."""
    try:
        value = read_json(path, default={})
    except (ValueError, OSError) as exc:
        problems.append(f"could not read {path.name}: {exc}")
        return {}
    return value if isinstance(value, dict) else {}


def add_report_assets(run_dir: str | Path, images=(), audio=(), tables=(), prefix: str = "",
                      stage: str | None = None) -> Path:
    """Merge entries into <run-dir>/report_assets.json (what several stages show in one report).

    `prefix` is prepended to relative image/audio paths. An entry replaces one with the same path (images,
    audio) or title (tables); with `stage`, every entry that stage wrote before is dropped first, so a
    re-run stage leaves no stale pictures behind."""
    path = Path(run_dir) / "report_assets.json"
    assets = read_json(path, default=None) or {}
    for kind, new, key in (("images", images, "path"), ("audio", audio, "path"), ("tables", tables, "title")):
        new = [{**item, **({"path": prefix + item["path"]} if key == "path" else {}),
                **({"stage": stage} if stage else {})} for item in new]
        keys = {item[key] for item in new}
        kept = [a for a in assets.get(kind, []) if a.get(key) not in keys and not (stage and a.get("stage") == stage)]
        assets[kind] = kept + new
    atomic_write_json(path, assets)
    return path


def render_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir).resolve()
    problems: list[str] = []
    meta = _read_json_or_note(run_dir / "meta.json", problems)
    metrics = _read_json_or_note(run_dir / "metrics.json", problems)
    assets = _read_json_or_note(run_dir / "report_assets.json", problems)
    config_file = run_dir / "config.yaml"
    config_text = config_file.read_text(encoding="utf-8") if config_file.exists() else "(no config.yaml)"
    task = meta.get("task", "?")
    status = meta.get("status", "?")

    summary = {k: meta.get(k) for k in ("task", "status", "user", "host", "created", "finished", "git_sha",
                                        "config_hash", "data_fingerprint", "gpu_locks", "argv_overrides")
               if meta.get(k) not in (None, "", [])}
    summary["run_dir"] = str(run_dir)
    body = [f"<h1>{e(task)} run <span class='status-{e(status)}'>{e(status)}</span></h1>",
            *[f"<p class=warn>{e(p)}</p>" for p in problems],
            _html_table([{"": k, "value": v} for k, v in summary.items()]), "<h2>Metrics</h2>",
            _html_table([{"metric": k, "value": v} for k, v in sorted(metrics.items())]) if metrics
            else "<p><i>no metrics.json yet</i></p>",
            "<h2>Stages</h2>", _stages_html(meta)]

    sources, notes = collect_training_logs(run_dir)
    body.append("<h2>Training curves</h2>")
    if not sources:
        body.append("<p><i>no Lightning CSV or TensorBoard logs found in this run</i></p>")
    for name, series in sources.items():
        png = plot_series(name, series)
        body.append(f'<figure><img src="{_data_uri(png, "image/png")}" alt="{e(name)}"><figcaption>{e(name)}'
                    f"</figcaption></figure>")
    body += [f"<p class=warn>{e(n)}</p>" for n in notes]

    if assets.get("images"):
        body += ["<h2>Pictures</h2>", _images_html(run_dir, assets["images"])]
    if assets.get("audio"):
        body += ["<h2>Audio</h2>", _audio_html(run_dir, assets["audio"])]
    for table in assets.get("tables", []):
        body += [f"<h2>{e(str(table.get('title', 'table')))}</h2>", _html_table(list(table.get("rows", [])))]

    if status != "done":
        body.append(_run_log_tail(run_dir))
    body += ["<h2>Config (config.yaml)</h2>", f"<pre>{e(config_text)}</pre>",
             "<h2>Versions</h2>", _html_table([meta.get("versions", {})])]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(task)} run {e(run_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_run_report(run_dir: str | Path) -> Path:
    """Write <run-dir>/report.html (atomically) and return its path."""
    run_dir = Path(run_dir)
    target = run_dir / "report.html"
    atomic_write_text(target, render_report(run_dir))
    return target
