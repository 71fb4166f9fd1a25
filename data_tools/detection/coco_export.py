"""COCO export: a standalone folder (images/ + annotations.json, category ids 1..3, file names relative)
that any COCO tool (Roboflow upload, mmdetection, TAO's COCO loaders) reads as is."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hackathon.core.atomic import atomic_path

from data_tools.detection.dataset import Dataset, ImageRecord, load_dataset, save_dataset


def export_coco(dataset_json: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Copy the images of dataset_json into out_dir/images and write out_dir/annotations.json."""
    ds = load_dataset(dataset_json)
    out = Path(out_dir)
    images = []
    for i, img in enumerate(ds.images):
        target = out / "images" / f"{i:06d}_{img.path.name}"
        if not target.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(img.path, tmp)
        images.append(ImageRecord(target, img.width, img.height, img.boxes, img.source, img.split, img.sha256))
    save_dataset(Dataset(images, ds.classes), out / "annotations.json")
    return out
