"""Readers for the four annotation formats the team has, and layout auto-detection.

Readers return RawImage records: boxes exactly as annotated (class names not yet mapped, coordinates not
yet checked), so that validation (data_tools/detection/ingest.py) can report every quirk in one place.

- PASCAL VOC XML (Kaggle face-mask-detection: images/ + annotations/; labelImg: xml next to the image)
- YOLO txt (labelImg: classes.txt + <stem>.txt next to images; Roboflow: data.yaml + {train,valid,test}/
  {images,labels}); coordinates normalised centre x, y, width, height
- COCO JSON (Roboflow `_annotations.coco.json` per split, images next to it; its placeholder category
  id 0, the dataset name with supercategory "none", is dropped)
- labelImg CreateML JSON: [{"image": name, "annotations": [{"label", "coordinates": {x, y, width, height}}]}]
  with x, y the box centre in pixels
- Label Studio JSON export (data_tools/label_studio.py): RectangleLabels in percent of original_width /
  original_height, top-left x, y and a rotation about it; images behind local-files / upload URLs
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from hackathon.core.atomic import read_json_list

from data_tools import label_studio as ls

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
FORMATS = ("voc", "yolo", "coco", "createml", "label_studio")


@dataclass
class RawBox:
    name: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficult: bool = False
    normalised: bool = False  # YOLO: fractions of the image size, scaled once the image is opened
    float_coords: bool = False  # the file wrote non-integer pixel coordinates


@dataclass
class RawImage:
    image_path: Path | None  # None when the annotation names no findable image
    annotation: str  # annotation file (and entry) it came from, for reports
    fmt: str
    boxes: list[RawBox] = field(default_factory=list)
    declared_size: tuple[int, int] | None = None  # (width, height) written in the annotation, if any
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail) found while reading


def _is_float_text(text: str) -> bool:
    try:
        return float(text) != int(float(text))
    except ValueError:
        return False


def _find_image(name: str, near: list[Path]) -> Path | None:
    """The image called `name` in any of the `near` folders (also trying other extensions)."""
    name_path = Path(name)
    for folder in near:
        candidate = folder / name_path.name
        if candidate.is_file():
            return candidate
    for folder in near:
        if folder.is_dir():
            for ext in IMAGE_EXTENSIONS:
                for candidate in (folder / (name_path.stem + ext), folder / (name_path.stem + ext.upper())):
                    if candidate.is_file():
                        return candidate
    return None


# ----------------------------------------------------------------------------- VOC

def is_voc_xml(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return b"<annotation" in fh.read(2048)
    except OSError:
        return False


def read_voc_file(xml_path: Path) -> RawImage:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        return RawImage(None, str(xml_path), "voc", problems=[("bad_annotation", f"XML parse error: {exc}")])
    filename = (root.findtext("filename") or "").strip()
    path_text = (root.findtext("path") or "").strip()
    near = [xml_path.parent, xml_path.parent.parent / "images", xml_path.parent.parent / "JPEGImages"]
    image = _find_image(filename, near) if filename else None
    if image is None and path_text and Path(path_text).is_file():
        image = Path(path_text)
    if image is None and not filename:
        image = _find_image(xml_path.stem + ".jpg", near)
    rec = RawImage(image, str(xml_path), "voc")
    if image is None:
        rec.problems.append(("missing_image", f"image {filename or xml_path.stem!r} not found next to {xml_path}"))
    try:
        w, h = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
        rec.declared_size = (w, h) if w > 0 and h > 0 else None
    except (TypeError, ValueError):
        rec.declared_size = None
    for n, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        try:
            texts = [obj.findtext(f"bndbox/{k}").strip() for k in ("xmin", "ymin", "xmax", "ymax")]
            x1, y1, x2, y2 = (float(t) for t in texts)
        except (AttributeError, ValueError):
            rec.problems.append(("bad_box", f"object #{n} ({name!r}) has no numeric bndbox"))
            continue
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
        rec.boxes.append(RawBox(name, x1, y1, x2, y2, difficult, float_coords=any(_is_float_text(t) for t in texts)))
    return rec


def read_voc(folder: Path) -> list[RawImage]:
    return [read_voc_file(p) for p in sorted(folder.rglob("*.xml")) if is_voc_xml(p)]


# ----------------------------------------------------------------------------- YOLO

def _yolo_names_from_yaml(data_yaml: Path) -> list[str]:
    import yaml

    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    names = data.get("names", [])
    if isinstance(names, dict):  # ultralytics style {0: name, 1: name}
        names = [names[k] for k in sorted(names, key=int)]
    return [str(n) for n in names]


def _read_yolo_label(txt: Path, image: Path | None, names: list[str], annotation: str) -> RawImage:
    rec = RawImage(image, annotation, "yolo")
    if image is None:
        rec.problems.append(("missing_image", f"no image with stem {txt.stem!r} for {txt}"))
    for n, line in enumerate(txt.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(float(parts[0]))
            cx, cy, w, h = (float(v) for v in parts[1:5])
            if len(parts) < 5:
                raise ValueError
        except ValueError:
            rec.problems.append(("bad_box", f"{txt}:{n}: not 'class cx cy w h': {line!r}"))
            continue
        name = names[cls] if 0 <= cls < len(names) else f"<class index {cls}>"
        rec.boxes.append(RawBox(name, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, normalised=True))
    return rec


def read_yolo(folder: Path) -> list[RawImage]:
    """labelImg (classes.txt) or Roboflow (data.yaml + {split}/images + {split}/labels) YOLO folders."""
    out: list[RawImage] = []
    data_yaml = next((p for p in (folder / "data.yaml", folder / "data.yml") if p.is_file()), None)
    if data_yaml is not None:
        names = _yolo_names_from_yaml(data_yaml)
        label_dirs = sorted(d for d in folder.rglob("labels") if d.is_dir())
        for labels in label_dirs:
            images = labels.parent / "images"
            for txt in sorted(labels.glob("*.txt")):
                out.append(_read_yolo_label(txt, _find_image(txt.stem, [images]), names, str(txt)))
        return out
    for classes_file in sorted(folder.rglob("classes.txt")):
        names = [ln.strip() for ln in classes_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        d = classes_file.parent
        for txt in sorted(d.glob("*.txt")):
            if txt.name == "classes.txt":
                continue
            out.append(_read_yolo_label(txt, _find_image(txt.stem, [d, d.parent / "images"]), names, str(txt)))
    return out


# ----------------------------------------------------------------------------- COCO

def _is_coco_json(path: Path) -> bool:
    if path.name == "_annotations.coco.json":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if not head.lstrip().startswith(b"{"):
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(data, dict) and "images" in data and "annotations" in data
    except (OSError, ValueError):
        return False


def placeholder_category_ids(categories: list[dict]) -> set[int]:
    """Roboflow exports carry category id 0 named after the dataset with supercategory 'none'; the real
    classes have it as their supercategory. Such an id-0 entry is a placeholder, not a class."""
    ids = set()
    for c in categories:
        if c.get("id") == 0:
            others = [o for o in categories if o.get("id") != 0]
            if others and (c.get("supercategory") in ("none", None, "")
                           or any(o.get("supercategory") == c.get("name") for o in others)):
                ids.add(0)
    return ids


def read_coco_file(json_path: Path) -> list[RawImage]:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        categories = data.get("categories", [])
        images = data["images"]
        annotations = data.get("annotations", [])
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        return [RawImage(None, str(json_path), "coco", problems=[("bad_annotation", f"not a COCO file: {exc}")])]
    placeholders = placeholder_category_ids(categories)
    names = {c["id"]: c["name"] for c in categories if c.get("id") not in placeholders}
    near = [json_path.parent, json_path.parent / "images"]
    by_id: dict = {}
    out = []
    for e in images:
        image = _find_image(str(e.get("file_name", "")), near)
        rec = RawImage(image, f"{json_path}#image {e.get('id')}", "coco")
        if image is None:
            rec.problems.append(("missing_image", f"image {e.get('file_name')!r} not found next to {json_path}"))
        if e.get("width") and e.get("height"):
            rec.declared_size = (int(e["width"]), int(e["height"]))
        by_id[e.get("id")] = rec
        out.append(rec)
    for a in annotations:
        rec = by_id.get(a.get("image_id"))
        if rec is None:
            continue
        cat = a.get("category_id")
        name = names.get(cat, f"<placeholder category {cat}>" if cat in placeholders else f"<category id {cat}>")
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            rec.problems.append(("bad_box", f"annotation {a.get('id')} has no [x,y,w,h] bbox"))
            continue
        rec.boxes.append(RawBox(name, x, y, x + w, y + h, bool(a.get("difficult", 0)),
                                float_coords=any(v != int(v) for v in (x, y, w, h))))
    return out


def _read_files(folder: Path, is_kind, read_file) -> list[RawImage]:
    """`read_file` on `folder` itself when it is a file, else on every JSON below it that `is_kind`."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*.json") if is_kind(p))
    return [rec for f in files for rec in read_file(f)]


def read_coco(folder: Path) -> list[RawImage]:
    return _read_files(folder, _is_coco_json, read_coco_file)


# ----------------------------------------------------------------------------- CreateML

def _is_createml_json(path: Path) -> bool:
    data = read_json_list(path)
    return data is not None and all(isinstance(e, dict) and "image" in e and "annotations" in e for e in data)


def read_createml_file(json_path: Path) -> list[RawImage]:
    out = []
    for entry in json.loads(json_path.read_text(encoding="utf-8")):
        image = _find_image(str(entry["image"]), [json_path.parent, json_path.parent.parent / "images"])
        rec = RawImage(image, f"{json_path}#{entry['image']}", "createml")
        if image is None:
            rec.problems.append(("missing_image", f"image {entry['image']!r} not found next to {json_path}"))
        for a in entry.get("annotations") or []:
            try:
                c = a["coordinates"]
                cx, cy, w, h = (float(c[k]) for k in ("x", "y", "width", "height"))
            except (KeyError, TypeError, ValueError):
                rec.problems.append(("bad_box", f"annotation {a!r} has no x/y/width/height coordinates"))
                continue
            rec.boxes.append(RawBox(str(a.get("label", "")), cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2,
                                    float_coords=any(v != int(v) for v in (cx, cy, w, h))))
        out.append(rec)
    return out


def read_createml(folder: Path) -> list[RawImage]:
    return _read_files(folder, _is_createml_json, read_createml_file)


# ----------------------------------------------------------------------------- Label Studio

def _ls_box(r: dict, rec: RawImage) -> RawBox | None:
    import math

    v = r.get("value") or {}
    labels = v.get("rectanglelabels") or []
    try:
        width, height = float(r["original_width"]), float(r["original_height"])
        x, y, w, h = (float(v[k]) * s / 100 for k, s in (("x", width), ("y", height), ("width", width), ("height", height)))
    except (KeyError, TypeError, ValueError):
        rec.problems.append(("bad_box", f"result {r.get('id')} has no x/y/width/height or original size"))
        return None
    if len(labels) != 1:
        rec.problems.append(("bad_box", f"result {r.get('id')} has {len(labels)} labels {labels}; box dropped"))
        return None
    rec.declared_size = rec.declared_size or (round(width), round(height))
    angle = float(v.get("rotation") or 0) % 360
    if angle:  # Label Studio rotates clockwise about the top-left corner
        c, s_ = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        xs, ys = zip(*[(x + dx * c - dy * s_, y + dx * s_ + dy * c) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))])
        rec.problems.append(("rotated_box", f"{labels[0]} box rotated {angle:g} deg; its axis-aligned bounding box kept"))
        return RawBox(str(labels[0]), min(xs), min(ys), max(xs), max(ys))
    return RawBox(str(labels[0]), x, y, x + w, y + h)


def read_label_studio_file(json_path: Path) -> list[RawImage]:
    out = []
    for task in ls.load_tasks(json_path, ls.IMAGE_KEYS):
        image = ls.resolve_media(ls.media_url(task, ls.IMAGE_KEYS), json_path)
        rec = RawImage(image if image.is_file() else None, ls.where(json_path, task), "label_studio")
        out.append(rec)
        if rec.image_path is None:
            rec.problems.append(("missing_image", f"image {image} is gone"))
            continue
        ann, kind, detail = ls.pick_annotation(task)
        if ann is None:
            rec.image_path = None  # nothing to learn from an image nobody labelled
            rec.problems.append((kind, detail))
            continue
        for r in ann["result"]:
            if r.get("type") == "rectanglelabels":
                box = _ls_box(r, rec)
                if box:
                    rec.boxes.append(box)
    return out


def read_label_studio(folder: Path) -> list[RawImage]:
    return _read_files(folder, ls.is_export, read_label_studio_file)


# ----------------------------------------------------------------------------- layout detection

JSON_TESTS = {"coco": _is_coco_json, "createml": _is_createml_json, "label_studio": ls.is_export}


def detect_formats(src: Path) -> list[str]:
    """Which of the four formats a source folder (or file) holds; several when it mixes them."""
    if src.is_file():
        if src.suffix == ".xml":
            return ["voc"] if is_voc_xml(src) else []
        if src.suffix == ".json":
            return next(([f] for f, test in JSON_TESTS.items() if test(src)), [])
        return []
    found = []
    if any(is_voc_xml(p) for p in src.rglob("*.xml")):
        found.append("voc")
    if (src / "data.yaml").is_file() or (src / "data.yml").is_file() or any(src.rglob("classes.txt")):
        found.append("yolo")
    jsons = list(src.rglob("*.json"))
    # in a folder, a Label Studio export counts only when it holds image tasks (not an audio export)
    tests = {**JSON_TESTS, "label_studio": lambda p: ls.is_export(p) and ls.load_tasks(p, ls.IMAGE_KEYS)}
    return found + [f for f, test in tests.items() if any(test(p) for p in jsons)]


READERS = {"voc": read_voc, "yolo": read_yolo, "coco": read_coco, "createml": read_createml,
           "label_studio": read_label_studio}


def read_source(src: Path, fmt: str | None = None) -> tuple[list[str], list[RawImage]]:
    """(formats found, raw records) for one source; `fmt` forces a format instead of auto-detecting."""
    if fmt is not None and fmt not in READERS:
        from hackathon.core.errors import HackathonError

        raise HackathonError(f"Unknown annotation format {fmt!r}.", fix=f"Use one of {', '.join(FORMATS)}.")
    if fmt == "voc" and src.is_file():
        return ["voc"], [read_voc_file(src)]
    formats = [fmt] if fmt else detect_formats(src)
    records: list[RawImage] = []
    for f in formats:
        records += READERS[f](src)
    return formats, records
