"""The one internal dataset form (images + boxes in absolute pixels) and its COCO `dataset.json` interchange.

dataset.json is plain COCO (images / annotations / categories, bbox = [x, y, w, h] in pixels) with a few
extra per-image keys the tools use: `split` (train/val/test), `sha256`, `source` (where it was ingested
from), and per-annotation `difficult` (VOC flag, kept). `file_name` is relative to the JSON's folder when
the image lives under it, absolute otherwise, so a dataset folder can be moved as a whole.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hackathon.core.atomic import atomic_write_json, read_json
from hackathon.core.errors import HackathonError

from data_tools.detection.classes import CANONICAL_CLASSES


@dataclass
class Box:
    """Axis-aligned box in absolute pixels of the (orientation-fixed) image: x1 < x2, y1 < y2."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    difficult: bool = False

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def iou(self, other: "Box") -> float:
        return float(box_iou([[self.x1, self.y1, self.x2, self.y2]], [[other.x1, other.y1, other.x2, other.y2]])[0, 0])


def box_iou(a, b):
    """IoU matrix [N, M] (numpy) of boxes x1,y1,x2,y2 [N, 4] and [M, 4]: torchvision.ops.box_iou, 0 where a
    union is empty. The one box IoU of the detection code (ingest, scoring, the export check)."""
    import numpy as np
    import torch
    from torchvision.ops import box_iou as iou

    a = torch.as_tensor(np.asarray(a, dtype=np.float64).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    return torch.nan_to_num(iou(a, b), nan=0.0).numpy()


@dataclass
class ImageRecord:
    path: Path  # absolute path of the image file
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    source: str = ""  # the annotation file / source it came from (for reports)
    split: str | None = None
    sha256: str | None = None
    id: int | None = None  # COCO image id once saved/loaded


@dataclass
class Dataset:
    images: list[ImageRecord] = field(default_factory=list)
    classes: tuple[str, ...] = CANONICAL_CLASSES

    def category_id(self, label: str) -> int:
        return self.classes.index(label) + 1

    def box_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for img in self.images:
            for b in img.boxes:
                counts[b.label] = counts.get(b.label, 0) + 1
        return counts

    def subset(self, split: str) -> "Dataset":
        return Dataset([im for im in self.images if im.split == split], self.classes)


def _relative_or_absolute(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def to_coco(ds: Dataset, base_dir: Path) -> dict:
    """COCO dict for `ds`; image ids are 1..N in order, annotation ids 1..M."""
    images, annotations = [], []
    ann_id = 0
    for image_id, img in enumerate(ds.images, start=1):
        entry = {"id": image_id, "file_name": _relative_or_absolute(img.path, base_dir),
                 "width": int(img.width), "height": int(img.height)}
        for key in ("split", "sha256", "source"):
            if getattr(img, key):
                entry[key] = getattr(img, key)
        images.append(entry)
        for b in img.boxes:
            ann_id += 1
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": ds.category_id(b.label),
                "bbox": [round(b.x1, 3), round(b.y1, 3), round(b.width, 3), round(b.height, 3)],
                "area": round(b.area, 3), "iscrowd": 0, "difficult": int(bool(b.difficult)),
            })
    categories = [{"id": i, "name": c, "supercategory": "face"} for i, c in enumerate(ds.classes, start=1)]
    return {"info": {"description": "hackathon face-mask dataset", "version": "1"},
            "images": images, "annotations": annotations, "categories": categories}


def save_dataset(ds: Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` as COCO dataset.json (atomically) and return its path."""
    path = Path(path)
    atomic_write_json(path, to_coco(ds, path.parent))
    return path


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Read a dataset.json written by save_dataset (or any COCO file whose categories are our classes)."""
    path = Path(path)
    coco = read_json(path)
    if coco is None:
        raise HackathonError(f"Dataset file {path} not found.", fix="Run `hackathon detect ingest` (or the prepare stage) first.")
    try:
        classes = tuple(c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"]))
        cat_names = {c["id"]: c["name"] for c in coco["categories"]}
        by_image: dict[int, ImageRecord] = {}
        images = []
        for e in coco["images"]:
            p = Path(e["file_name"])
            rec = ImageRecord(path=p if p.is_absolute() else (path.parent / p), width=int(e["width"]),
                              height=int(e["height"]), source=e.get("source", ""), split=e.get("split"),
                              sha256=e.get("sha256"), id=int(e["id"]))
            by_image[rec.id] = rec
            images.append(rec)
        for a in coco["annotations"]:
            x, y, w, h = (float(v) for v in a["bbox"])
            by_image[int(a["image_id"])].boxes.append(
                Box(cat_names[a["category_id"]], x, y, x + w, y + h, bool(a.get("difficult", 0))))
    except (KeyError, TypeError, ValueError) as exc:
        raise HackathonError(f"{path} is not a valid COCO dataset file ({type(exc).__name__}: {exc}).",
                             fix="Re-create it with `hackathon detect ingest`.")
    return Dataset(images, classes)
