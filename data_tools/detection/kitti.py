"""KITTI export, the layout TAO's `dataset_convert` (kitti_config) reads for SSD / YOLOv3.

    out_dir/images/<stem>.png      every image resized to exactly width x height (TAO SSD/YOLO need a
                                   fixed input size; resizing here keeps the boxes and pixels in sync)
    out_dir/labels/<stem>.txt      one line per box, 15 fields:
        type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y
        with `type` the lower-case class name and the 3-D fields zero (2-D detection)
    out_dir/kitti_index.json       stem -> original image id, file, size and the x/y scale, so TAO's
                                   inference output (in resized pixels) can be mapped back for scoring
"""

from __future__ import annotations

import os
from pathlib import Path

from hackathon.core.atomic import atomic_path, atomic_write_json, atomic_write_text
from hackathon.core.errors import HackathonError

from data_tools.detection.dataset import Dataset, load_dataset

KITTI_INDEX = "kitti_index.json"


def kitti_line(label: str, x1: float, y1: float, x2: float, y2: float, truncated: float = 0.0,
               occluded: int = 0) -> str:
    """One KITTI label line (15 fields) for a 2-D box."""
    return (f"{label.lower()} {truncated:.2f} {occluded:d} 0.00 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
            "0.00 0.00 0.00 0.00 0.00 0.00 0.00")


def parse_kitti_line(line: str) -> dict:
    """Parse a KITTI label or TAO inference line: 15 fields, or 16 with a trailing confidence score."""
    parts = line.split()
    if len(parts) not in (15, 16):
        raise ValueError(f"expected 15 or 16 fields, got {len(parts)}")
    x1, y1, x2, y2 = (float(v) for v in parts[4:8])
    return {"label": parts[0], "bbox": (x1, y1, x2, y2), "score": float(parts[15]) if len(parts) == 16 else 1.0}


def export_kitti(dataset_json: str | os.PathLike | Dataset, out_dir: str | os.PathLike, width: int,
                 height: int) -> Path:
    """Export a dataset.json (or a loaded Dataset) to KITTI at out_dir, images resized to width x height.

    Boxes are scaled by (width / original width, height / original height). Class names are written in
    lower case (TAO's target_class_mapping keys are lower-case). Returns out_dir. Existing files in out_dir
    with the same names are replaced atomically; nothing outside out_dir is touched.
    """
    from PIL import Image

    if width <= 0 or height <= 0:
        raise HackathonError(f"KITTI export size {width}x{height} is not positive.",
                             fix="Set export.width / export.height in the spec to the network input size.")
    ds = dataset_json if isinstance(dataset_json, Dataset) else load_dataset(dataset_json)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    index = {}
    for i, img in enumerate(ds.images):
        stem = f"{i:06d}_{img.path.stem}"  # prefixed with the position: two sources' same file names never collide
        sx, sy = width / img.width, height / img.height
        with Image.open(img.path) as im:
            resized = im.convert("RGB").resize((width, height), Image.BILINEAR)
        with atomic_path(out / "images" / f"{stem}.png") as tmp:
            resized.save(tmp, format="PNG", compress_level=1)  # fast: these are throwaway training copies
        lines = [kitti_line(b.label, b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy) for b in img.boxes]
        atomic_write_text(out / "labels" / f"{stem}.txt", "\n".join(lines) + ("\n" if lines else ""))
        index[stem] = {"image_id": img.id if img.id is not None else i + 1, "file": str(img.path),
                       "width": img.width, "height": img.height, "scale_x": sx, "scale_y": sy}
    atomic_write_json(out / KITTI_INDEX, {"width": width, "height": height, "images": index})
    return out
