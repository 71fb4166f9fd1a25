"""One self-contained report.html per run, in the order a person reads it: the task's headline metrics, then
the pictures (training curves, the task's images, audio players), the task's tables, all metrics, then
provenance (run, versions, config) and the stages — everything embedded (base64), so the file can be mailed
or opened offline.

Inputs, all read from the run dir: meta.json, config.yaml, metrics.json, report_assets.json (what the task
wants shown: images/audio/tables with paths relative to the run dir, and `headline`, the metrics.json keys
that lead the page; a table with "headline": true joins them), Lightning CSV logs (metrics.csv) and
TensorBoard event files anywhere under the run dir (usually logs/ or checkpoints/). Nothing here knows a
task by name.
"""

from __future__ import annotations

import base64
import csv
import html
import io
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
# Bookkeeping columns of training logs (counters, clocks, the LR schedule): logged, never plotted.
BOOKKEEPING = re.compile(r"(^|/)(epoch|steps?|global_step|seconds|time|elapsed|hp_metric|learning_rate|lr([-_].*)?)$"
                         r"|timing", re.IGNORECASE)
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
                if tag is None or BOOKKEEPING.search(tag) or text in (None, ""):
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
    return {t: v for t, v in series.items() if not BOOKKEEPING.search(t)}


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
    """PNG: training losses together in the first panel, validation losses in the second, then each
    validation metric, then any other scalar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = {t for t in series if "loss" in t.lower()}
    validation = {t for t in series if re.search(r"(^|[/_])(val|v)[_/]|^val", t.lower())}
    others = sorted((t for t in series if t not in losses), key=lambda t: (t not in validation, t))
    panels: list[tuple[str, Series]] = [(name, {t: series[t] for t in tags}) for name, tags in
                                        (("loss", losses - validation), ("validation loss", losses & validation)) if tags]
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
        if "loss" in name and min(values) > 0 and max(values) / min(values) > 50:
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


def _html_table(rows: list[dict], max_rows: int = MAX_TABLE_ROWS, cls: str = "") -> str:
    if not rows:
        return "<p><i>(empty)</i></p>"
    columns: list[str] = []
    for r in rows[:max_rows]:
        columns += [c for c in r if c not in columns]
    head = "".join(f"<th>{e(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c, ''))}</td>" for c in columns) + "</tr>"
                   for r in rows[:max_rows])
    more = f"<p><i>{len(rows) - max_rows} more rows not shown</i></p>" if len(rows) > max_rows else ""
    return f"<table{f' class={cls}' if cls else ''}><tr>{head}</tr>{body}</table>{more}"


def _kv_table(items: dict) -> str:
    """key | value rows: a dict in a cell, or a list of settings."""
    rows = "".join(f"<tr><th>{e(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in items.items())
    return f"<table class=kv>{rows}</table>"


def _fmt(v: Any) -> str:
    if v is None or v != v:  # not measured / NaN
        return "\u2014"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _cell(v: Any) -> str:
    """A value as cell HTML: dicts and lists of rows become sub-tables, never JSON text."""
    if isinstance(v, dict):
        return _kv_table(v) if v else ""
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, dict) for x in v):
            return _html_table(list(v), cls="kv")
        if any(isinstance(x, (dict, list, tuple)) for x in v):
            return _kv_table(dict(enumerate(v)))
        return e(", ".join(_fmt(x) for x in v))
    return e(_fmt(v))


def _asset_file(run_dir: Path, rel: str) -> tuple[Path | None, str | None]:
    """(path, problem): a missing or oversized file is listed in the report, not fatal."""
    path = (run_dir / rel).resolve()
    if not path.is_file():
        return None, f"missing file {rel}"
    if path.stat().st_size > MAX_EMBED_BYTES:
        return None, f"{rel} is larger than {MAX_EMBED_BYTES >> 20} MiB: not embedded"
    return path, None


def _embedded(run_dir: Path, item: dict, tag: str) -> tuple[str, str]:
    """(caption, the <img>/<audio> element or the problem with its file)."""
    path, problem = _asset_file(run_dir, str(item.get("path", "")))
    caption = e(str(item.get("caption") or item.get("path", "")))
    if problem:
        return caption, f"<span class=warn>{e(problem)}</span>"
    uri = _data_uri(path.read_bytes(), MIME.get(path.suffix.lower(), "application/octet-stream"))
    return caption, (f'<img src="{uri}" alt="{caption}">' if tag == "img" else
                     f'<audio controls preload="none" src="{uri}"></audio>')


def _images_html(run_dir: Path, images: list[dict]) -> str:
    return "".join("<figure>{1}<figcaption>{0}</figcaption></figure>".format(*_embedded(run_dir, item, "img"))
                   for item in images)


def _audio_html(run_dir: Path, audio: list[dict]) -> str:
    rows = "".join("<tr><td>{}</td><td>{}</td>".format(*_embedded(run_dir, item, "audio"))
                   + f"<td>{e(str(item.get('text') or ''))}</td></tr>" for item in audio)
    return f"<table><tr><th>clip</th><th>listen</th><th>text</th></tr>{rows}</table>"


def _stages_html(meta: dict) -> str:
    """One row per stage; what the stage recorded (ctx.record) as a key | value sub-table."""
    columns = ("status", "seconds", "attempts", "resumed", "start", "end", "error")
    return _html_table([{"stage": name, **{c: entry.get(c, "") for c in columns},
                         "recorded": {k: v for k, v in entry.items() if k not in columns}}
                        for name, entry in meta.get("stages", {}).items()])


def _headline_html(metrics: dict, assets: dict) -> str:
    """The task's declared headline: a card per scalar metric, a small table per dict metric, then the
    tables marked "headline". Without a declaration: every metric, as a table."""
    declared = [item if isinstance(item, dict) else {"key": str(item)} for item in assets.get("headline") or []]
    tables = [t for t in assets.get("tables", []) if t.get("headline")]
    if not declared and not tables:
        rows = [{"metric": k, "value": v} for k, v in sorted(metrics.items())]
        return _html_table(rows) if rows else "<p><i>no metrics.json yet</i></p>"
    cards, parts = [], []
    for item in declared:
        key, label = item["key"], str(item.get("label") or item["key"])
        value = metrics.get(key)
        if isinstance(value, dict):
            parts.append(f"<h3>{e(label)}</h3>{_kv_table(value)}")
            continue
        hint = f"{key}, {item['better']} is better" if item.get("better") else key
        cards.append(f"<div class=card><div class=label>{e(label)}</div><div class=value>{_cell(value)}</div>"
                     f"<div class=key>{e(hint)}</div></div>")
    parts = ([f"<div class=cards>{''.join(cards)}</div>"] if cards else []) + parts
    parts += [f"<h3>{e(str(t.get('title', 'table')))}</h3>{_html_table(list(t.get('rows', [])))}" for t in tables]
    return "".join(parts)


def _curves_html(run_dir: Path) -> tuple[str, list[str]]:
    sources, notes = collect_training_logs(run_dir)
    return "".join(f'<figure><img src="{_data_uri(plot_series(name, series), "image/png")}" alt="{e(name)}">'
                   f"<figcaption>training curves: {e(name)}</figcaption></figure>" for name, series in sources.items()), notes


def _run_log_tail(run_dir: Path) -> str:
    log_file = run_dir / "logs" / "run.log"
    if not log_file.exists():
        return ""
    lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return f"<h2>Last {len(lines)} lines of logs/run.log</h2><pre>{e(redact(chr(10).join(lines)))}</pre>"


STYLE = """body{font-family:sans-serif;margin:1em 2em;max-width:1200px} h1{margin:.2em 0} h2{margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.5em 0 1.5em} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top;font-size:14px} th{background:#eee} table.kv{margin:0} table.kv th{font-weight:normal}
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px} figure{display:inline-block;margin:0 1em 1em 0}
img{max-width:100%} .warn{color:#b00} .status-done{color:#070} .status-failed{color:#b00} .sub{color:#555;margin:0}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:.8em 0} .card{border:1px solid #ccc;border-radius:6px;
padding:.5em 1em;min-width:9em} .card .label{font-size:14px;color:#333} .card .value{font-size:28px;font-weight:bold}
.card .key{font-size:11px;color:#777} section.headline h3{margin:.6em 0 .2em;font-size:15px}"""


def _read_json_or_note(path: Path, problems: list[str]) -> dict:
    """A torn or hand-edited JSON file is reported in the page, it does not stop the report."""
    try:
        value = read_json(path, default={})
    except (ValueError, OSError) as exc:
        problems.append(f"could not read {path.name}: {exc}")
        return {}
    return value if isinstance(value, dict) else {}


def add_report_assets(run_dir: str | Path, images=(), audio=(), tables=(), prefix: str = "",
                      stage: str | None = None, headline=None) -> Path:
    """Merge entries into <run-dir>/report_assets.json (what several stages show in one report).

    `prefix` is prepended to relative image/audio paths. An entry replaces one with the same path (images,
    audio) or title (tables); with `stage`, every entry that stage wrote before is dropped first, so a
    re-run stage leaves no stale pictures behind. `headline` (replaces the earlier one): the metrics.json
    keys that lead the report, each a key or {"key", "label", "better": "lower"|"higher"}; a table with
    "headline": true is shown with them."""
    path = Path(run_dir) / "report_assets.json"
    assets = read_json(path, default=None) or {}
    for kind, new, key in (("images", images, "path"), ("audio", audio, "path"), ("tables", tables, "title")):
        new = [{**item, **({"path": prefix + item["path"]} if key == "path" else {}),
                **({"stage": stage} if stage else {})} for item in new]
        keys = {item[key] for item in new}
        kept = [a for a in assets.get(kind, []) if a.get(key) not in keys and not (stage and a.get("stage") == stage)]
        assets[kind] = kept + new
    if headline is not None:
        assets["headline"] = list(headline)
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
    when = meta.get("finished") or meta.get("created") or ""
    who = "@".join(str(meta[k]) for k in ("user", "host") if meta.get(k))
    failed = [f"stage {n} {entry.get('status')}: {entry.get('error', '')}" for n, entry in meta.get("stages", {}).items()
              if entry.get("status") in ("failed", "interrupted")]

    body = [f"<h1>{e(task)} run <span class='status-{e(status)}'>{e(status)}</span></h1>",
            f"<p class=sub>{e(' · '.join(x for x in (run_dir.name, who, when) if x))}</p>",
            *[f"<p class=warn>{e(p)}</p>" for p in problems + failed],
            f"<section class=headline id=headline>{_headline_html(metrics, assets)}</section>"]

    curves, notes = _curves_html(run_dir)
    pictures = curves + (_images_html(run_dir, assets["images"]) if assets.get("images") else "")
    body.append("<section class=pictures id=pictures><h2>Pictures</h2>"
                + (pictures or "<p><i>no training logs or pictures in this run</i></p>")
                + "".join(f"<p class=warn>{e(n)}</p>" for n in notes)
                + (f"<h3>Listen</h3>{_audio_html(run_dir, assets['audio'])}" if assets.get("audio") else "")
                + "</section>")
    for table in assets.get("tables", []):
        if not table.get("headline"):
            body += [f"<h2>{e(str(table.get('title', 'table')))}</h2>", _html_table(list(table.get("rows", [])))]
    if assets.get("headline") or any(t.get("headline") for t in assets.get("tables", [])):
        body += ["<h2>All metrics</h2>", _html_table([{"metric": k, "value": v} for k, v in sorted(metrics.items())
                                                      if k != "init"])
                 if metrics else "<p><i>no metrics.json yet</i></p>"]

    summary = {k: meta.get(k) for k in ("task", "status", "user", "host", "created", "finished", "git_sha",
                                        "config_hash", "data_fingerprint", "gpu_locks", "argv_overrides")
               if meta.get(k) not in (None, "", [])}
    summary["run_dir"] = str(run_dir)
    inits = [{"model": m, **r, "sha256": (r.get("sha256") or "\u2014")[:16]}
             for m, r in sorted((metrics.get("init") or {}).items())]
    body += ["<h2 id=provenance>Provenance</h2>", _kv_table(summary),
             *(["<h3 id=weights>Where the weights started</h3>", _html_table(inits)] if inits else []),
             "<h2>Versions</h2>", _kv_table(meta.get("versions", {})),
             "<h2 id=stages>Stages</h2>", _stages_html(meta)]
    if status != "done":
        body.append(_run_log_tail(run_dir))
    body += ["<h2>Config (config.yaml)</h2>", f"<pre>{e(config_text)}</pre>"]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(task)} run {e(run_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_run_report(run_dir: str | Path) -> Path:
    """Write <run-dir>/report.html (atomically) and return its path."""
    run_dir = Path(run_dir)
    target = run_dir / "report.html"
    atomic_write_text(target, render_report(run_dir))
    return target
