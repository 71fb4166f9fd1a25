"""`hackathon detect ingest SRC... --out DIR`: any mix of VOC / YOLO / COCO / CreateML / Label Studio sources -> one
validated dataset (DIR/images/, DIR/dataset.json) with DIR/report.json and DIR/report.html.

What is checked (each finding is counted and listed in the report; the rest of the batch goes on):
- images: missing or corrupt -> rejected; grayscale / palette / CMYK / RGBA -> converted to RGB;
  EXIF orientation -> the pixels are made to match the boxes (see `_orientation_policy`) and the tag is
  dropped, so every later tool sees the same picture the boxes were drawn on.
- boxes: inverted (x2 < x1) and zero-area boxes dropped; boxes crossing the border clipped; boxes fully
  outside dropped; non-integer coordinates kept as floats (reported); `difficult` flags kept.
- classes: mapped through the alias table; unknown names reported and their boxes dropped (not guessed).
- duplicates: the same image bytes from several sources become one image with the union of boxes;
  a box repeating one of the same class (IoU >= 0.9) is dropped.
Source files are only read, never modified.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hackathon.core.atomic import atomic_write_bytes, atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger

from data_tools import label_studio
from data_tools.detection.classes import AliasTable
from data_tools.detection.dataset import Box, Dataset, ImageRecord, save_dataset
from data_tools.detection.formats import RawImage, read_source

log = get_logger("hackathon.detect.ingest")
DUPLICATE_BOX_IOU = 0.9
EXIF_ORIENTATION = 0x0112
ROTATING_ORIENTATIONS = {5, 6, 7, 8}  # these swap width and height
# kind -> what the user does about it (the report lists it beside each finding that lost data)
FIXES = {**label_studio.FIXES,
         "unknown_class": "add the name under its class in specs/detect/aliases.yaml (or data.aliases), then ingest again",
         "missing_image": "put the image back where its annotation says (next to it; for Label Studio at the task's "
                          "path, or delete the task there), then ingest again",
         "corrupt_image": "re-copy or re-export the image, then ingest again",
         "bad_box": "fix the box in the annotation file (or redraw it in the labelling tool)",
         "inverted_box": "redraw the box", "zero_area_box": "redraw the box", "box_outside_image": "redraw the box"}
NO_IMAGE_KINDS = {"missing_image", "skipped_task", "unlabelled_task", "empty_annotation"}


@dataclass
class IngestReport:
    """Everything the user should know about what happened to their data."""

    sources: list[dict] = field(default_factory=list)
    issues: dict[str, list[dict]] = field(default_factory=dict)
    raw_class_names: Counter = field(default_factory=Counter)

    def add(self, kind: str, file: str, detail: str) -> None:
        self.issues.setdefault(kind, []).append({"file": file, "detail": detail, **({"fix": FIXES[kind]} if kind in FIXES else {})})

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.issues.items())}


# ----------------------------------------------------------------------------- images

def _orientation_policy(orientation: int, raw_size: tuple[int, int], declared: tuple[int, int] | None) -> str:
    """'apply' when the boxes were drawn on the EXIF-rotated view, else 'strip' (boxes in stored pixels).

    Only a declared annotation size can tell: if it equals the rotated size (and not the stored one) the
    annotator saw the rotated picture. Without it we assume stored pixels, which is what labelImg (Qt5
    without auto-transform) shows; Roboflow's auto-orient already removed the tag from its exports.
    """
    if orientation in ROTATING_ORIENTATIONS and declared is not None:
        rotated = (raw_size[1], raw_size[0])
        if declared == rotated and declared != raw_size:
            return "apply"
    return "strip"


def _load_image(rec: RawImage, report: IngestReport):
    """(PIL RGB image or None, needs_reencode, sha256 of the file bytes). Rejections go to the report."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = rec.image_path
    if path is None or not path.is_file():
        return None, False, None
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(path) as probe:
            probe.verify()  # catches truncated/corrupt files cheaply
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        report.add("corrupt_image", str(path), f"cannot decode: {exc}")
        return None, False, sha
    reencode = False
    orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    if orientation not in (1, None):
        policy = _orientation_policy(orientation, im.size, rec.declared_size)
        if policy == "apply":
            im = ImageOps.exif_transpose(im)
        report.add(f"exif_orientation_{'applied' if policy == 'apply' else 'stripped'}", str(path),
                   f"EXIF orientation {orientation}: " + ("boxes match the rotated view, pixels rotated" if policy == "apply"
                                                          else "boxes match the stored pixels, tag removed"))
        reencode = True
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        report.add("rgba_image", str(path), f"mode {im.mode}: alpha composited on white")
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im).convert("RGB")
        reencode = True
    elif im.mode != "RGB":
        report.add("grayscale_image" if im.mode in ("L", "I", "I;16", "F", "1") else "converted_image", str(path),
                   f"mode {im.mode} converted to RGB")
        im = im.convert("RGB")
        reencode = True
    return im, reencode, sha


# ----------------------------------------------------------------------------- boxes

def _valid_boxes(rec: RawImage, width: int, height: int, aliases: AliasTable, report: IngestReport) -> list[Box]:
    """Map classes, scale YOLO fractions, drop/clip bad boxes; every change is reported."""
    where = rec.annotation
    out: list[Box] = []
    for raw in rec.boxes:
        report.raw_class_names[raw.name] += 1
        label = aliases.canonical(raw.name)
        if label is None:
            report.add("unknown_class", where, f"class {raw.name!r} is not in the alias table; box dropped")
            continue
        x1, y1, x2, y2 = raw.x1, raw.y1, raw.x2, raw.y2
        if raw.normalised:
            x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        if raw.float_coords:
            report.add("float_coordinates", where, f"{raw.name} box has non-integer pixels {raw.x1},{raw.y1},{raw.x2},{raw.y2}; kept")
        if any(v != v for v in (x1, y1, x2, y2)):  # NaN
            report.add("bad_box", where, f"{raw.name} box has NaN coordinates; dropped")
            continue
        if x2 < x1 or y2 < y1:
            report.add("inverted_box", where, f"{raw.name} box ({x1:g},{y1:g})-({x2:g},{y2:g}) is inverted; dropped")
            continue
        if x2 == x1 or y2 == y1:
            report.add("zero_area_box", where, f"{raw.name} box ({x1:g},{y1:g})-({x2:g},{y2:g}) has zero area; dropped")
            continue
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
        if cx2 <= cx1 or cy2 <= cy1:
            report.add("box_outside_image", where, f"{raw.name} box ({x1:g},{y1:g})-({x2:g},{y2:g}) is outside the {width}x{height} image; dropped")
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            report.add("box_clipped", where, f"{raw.name} box ({x1:g},{y1:g})-({x2:g},{y2:g}) clipped to the {width}x{height} image")
        box = Box(label, cx1, cy1, cx2, cy2, raw.difficult)
        if raw.difficult:
            report.add("difficult_kept", where, f"{raw.name} box flagged difficult; kept with the flag")
        out.append(box)
    return out


def _merge_boxes(existing: list[Box], new: list[Box], where: str, report: IngestReport) -> list[Box]:
    merged = list(existing)
    for b in new:
        if any(o.label == b.label and o.iou(b) >= DUPLICATE_BOX_IOU for o in merged):
            report.add("duplicate_box", where, f"{b.label} box ({b.x1:g},{b.y1:g})-({b.x2:g},{b.y2:g}) repeats another; dropped")
            continue
        merged.append(b)
    return merged


# ----------------------------------------------------------------------------- writing

def _encoded_bytes(im, src: Path, reencode: bool, ext: str) -> bytes:
    if not reencode:
        return src.read_bytes()
    import io

    buf = io.BytesIO()
    im.save(buf, **({"format": "PNG"} if ext == ".png" else {"format": "JPEG", "quality": 95}))
    return buf.getvalue()


def _place_image(data: bytes, stem: str, ext: str, sha: str, images_dir: Path, taken: set[str]) -> Path:
    """Write `data` under images_dir with the source's name when free, else with a content-hash suffix.
    A file already there with other bytes is never overwritten; one with the same bytes is reused
    (a re-run of the prepare stage writes nothing twice)."""
    for name in (f"{stem}{ext}", f"{stem}_{sha[:8]}{ext}", f"{stem}_{sha}{ext}"):
        target = images_dir / name
        if name in taken or (target.exists() and target.read_bytes() != data):
            continue
        taken.add(name)
        if not target.exists():
            atomic_write_bytes(target, data)
        return target
    raise HackathonError(f"Cannot find a free file name for {stem}{ext} in {images_dir}.",
                         fix="Ingest into a new, empty --out folder.")


def _check_output_dir(out: Path, sources: list[Path]) -> None:
    """Refuse to write where we could clobber the user's own files."""
    existing = out / "dataset.json"
    if existing.exists():
        try:
            ours = (read_json(existing) or {}).get("info", {}).get("description") == "hackathon face-mask dataset"
        except ValueError:
            ours = False
        if not ours:
            raise HackathonError(f"{existing} exists and was not written by `hackathon detect ingest`; not overwriting it.",
                                 fix="Choose a new --out folder.")
    for src in sources:
        if src.exists() and (out.resolve() == src.resolve() or src.resolve() in out.resolve().parents):
            raise HackathonError(f"--out {out} is inside the source {src}.",
                                 fix="Write the ingested dataset outside the source folders (sources are read-only to us).")


def ingest(sources: list[str | os.PathLike], out_dir: str | os.PathLike, aliases_file: str | os.PathLike | None = None,
           fmt: str | None = None, html: bool = True) -> tuple[Path, IngestReport]:
    """Read every source, validate, merge duplicates, and write out_dir/{images/, dataset.json, report.json,
    report.html}. Returns (dataset.json path, report). Raises HackathonError only when nothing usable is
    found; individual bad files are reported, not fatal."""
    aliases = AliasTable.load(aliases_file)
    out = Path(out_dir)
    _check_output_dir(out, [Path(s) for s in sources])
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    report = IngestReport()
    by_sha: dict[str, ImageRecord] = {}
    order: list[str] = []
    taken: set[str] = set()
    for src in sources:
        src = Path(src)
        if not src.exists():
            report.add("missing_source", str(src), "source path does not exist")
            continue
        formats, records = read_source(src, fmt)
        report.sources.append({"path": str(src), "formats": formats, "annotations": len(records)})
        if not formats:
            report.add("unknown_layout", str(src), "no VOC XML, YOLO (classes.txt / data.yaml), COCO, CreateML or Label Studio JSON found")
        for rec in records:
            for kind, detail in rec.problems:
                report.add(kind, rec.annotation, detail)
            im, reencode, sha = _load_image(rec, report)
            if im is None:
                if sha is None and not any(k in NO_IMAGE_KINDS for k, _ in rec.problems):
                    report.add("missing_image", rec.annotation, f"image {rec.image_path} not found")
                continue
            w, h = im.size
            if rec.declared_size and rec.declared_size != (w, h):
                report.add("size_mismatch", rec.annotation, f"annotation says {rec.declared_size}, image is {(w, h)}; image size used")
            boxes = _valid_boxes(rec, w, h, aliases, report)
            if sha in by_sha:
                report.add("duplicate_image", str(rec.image_path), f"same bytes as {by_sha[sha].source}; boxes merged")
                by_sha[sha].boxes = _merge_boxes(by_sha[sha].boxes, boxes, rec.annotation, report)
                continue
            ext = rec.image_path.suffix.lower() if not reencode else (".png" if rec.image_path.suffix.lower() == ".png" else ".jpg")
            target = _place_image(_encoded_bytes(im, rec.image_path, reencode, ext), rec.image_path.stem, ext, sha,
                                  images_dir, taken)
            by_sha[sha] = ImageRecord(target, w, h, _merge_boxes([], boxes, rec.annotation, report),
                                      source=rec.annotation, sha256=sha)
            order.append(sha)
    if not order:
        raise HackathonError(f"No usable images found in {', '.join(map(str, sources))}.",
                             fix="Point ingest at folders with VOC XML, YOLO (classes.txt or data.yaml), COCO JSON "
                                 "or CreateML JSON annotations next to their images; see the issues in the report.")
    ds = Dataset([by_sha[s] for s in order], aliases.classes)
    dataset_json = save_dataset(ds, out / "dataset.json")
    write_report(ds, report, out, html=html)
    return dataset_json, report


def report_dict(ds: Dataset, report: IngestReport) -> dict:
    return {
        "sources": report.sources,
        "images": len(ds.images),
        "boxes": sum(len(i.boxes) for i in ds.images),
        "class_counts": ds.box_counts(),
        "raw_class_names": dict(report.raw_class_names),
        "issue_counts": report.counts(),
        "issues": report.issues,
    }


def write_report(ds: Dataset, report: IngestReport, out: Path, html: bool = True) -> Path:
    atomic_write_json(out / "report.json", report_dict(ds, report))
    if html:
        from data_tools.detection.report_html import write_html_report

        write_html_report(ds, out / "report.html", title="Detection data ingest", summary=report_dict(ds, report))
    return out / "report.json"
