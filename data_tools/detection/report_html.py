"""Self-contained HTML data report: class counts per split, box-size histogram, sample images with boxes,
and the validation findings. Images are embedded (base64) so the file can be mailed or opened anywhere."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from hackathon.core.atomic import atomic_write_text

from data_tools.detection.dataset import Dataset

BOX_COLOURS = [(40, 200, 60), (230, 60, 50), (250, 170, 20)]
MAX_ISSUES_SHOWN = 25


def _png_b64(fig_or_image) -> str:
    buf = io.BytesIO()
    if hasattr(fig_or_image, "savefig"):
        fig_or_image.savefig(buf, format="png", dpi=80)
    else:
        fig_or_image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def class_counts_per_split(ds: Dataset) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for img in ds.images:
        row = out.setdefault(img.split or "all", {c: 0 for c in ds.classes} | {"images": 0})
        row["images"] += 1
        for b in img.boxes:
            row[b.label] = row.get(b.label, 0) + 1
    return out


def _size_histogram(ds: Dataset) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for cls in ds.classes:
        sizes = [b.area ** 0.5 for img in ds.images for b in img.boxes if b.label == cls]
        if sizes:
            ax.hist(sizes, bins=30, alpha=0.6, label=f"{cls} ({len(sizes)})")
    ax.set(xlabel="box size sqrt(w*h) [px]", ylabel="boxes", title="Box sizes")
    ax.legend()
    fig.tight_layout()
    data = _png_b64(fig)
    plt.close(fig)
    return data


def _sample_images(ds: Dataset, count: int) -> list[tuple[str, str]]:
    from PIL import Image, ImageDraw

    out = []
    step = max(1, len(ds.images) // max(1, count))
    for img in ds.images[::step][:count]:
        try:
            with Image.open(img.path) as im:
                canvas = im.convert("RGB")
        except OSError:
            continue
        draw = ImageDraw.Draw(canvas)
        for b in img.boxes:
            colour = BOX_COLOURS[ds.classes.index(b.label) % len(BOX_COLOURS)] if b.label in ds.classes else (255, 255, 255)
            draw.rectangle([b.x1, b.y1, b.x2, b.y2], outline=colour, width=2)
            draw.text((b.x1 + 2, max(0, b.y1 - 11)), b.label + (" (difficult)" if b.difficult else ""), fill=colour)
        canvas.thumbnail((360, 360))
        out.append((img.path.name, _png_b64(canvas)))
    return out


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html_report(ds: Dataset, target: Path, title: str, summary: dict | None = None, samples: int = 8,
                      extra_tables: list[dict] | None = None) -> Path:
    """Write the report; `summary` may carry `issue_counts` and `issues` (from ingest), `extra_tables`
    [{title, rows}] (e.g. balance before/after)."""
    summary = summary or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{margin:4px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(ds.images)} images, {sum(len(i.boxes) for i in ds.images)} boxes.</p>",
             "<h2>Class counts per split</h2>",
             _table([{"split": s, **c} for s, c in sorted(class_counts_per_split(ds).items())])]
    for t in extra_tables or []:
        parts += [f"<h2>{html.escape(t['title'])}</h2>", _table(t["rows"])]
    if summary.get("issue_counts"):
        parts += ["<h2>Validation findings</h2>",
                  _table([{"finding": k, "count": v} for k, v in summary["issue_counts"].items()])]
        for kind, items in summary.get("issues", {}).items():
            shown = items[:MAX_ISSUES_SHOWN]
            more = f" (first {MAX_ISSUES_SHOWN} of {len(items)}; all in report.json)" if len(items) > len(shown) else ""
            parts += [f"<h3>{html.escape(kind)}{more}</h3>", _table(shown)]
    if any(i.boxes for i in ds.images):
        parts += ["<h2>Box sizes</h2>", f"<img src='data:image/png;base64,{_size_histogram(ds)}'>"]
    parts.append("<h2>Samples</h2><div>")
    for name, data in _sample_images(ds, samples):
        parts.append(f"<img title='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</div></body></html>")
    atomic_write_text(target, "\n".join(parts))
    return target
