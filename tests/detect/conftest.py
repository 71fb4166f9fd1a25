"""Hand-made detection fixtures, generated in code with PIL (no datasets in git)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def make_image(path: Path, size=(100, 80), mode="RGB", exif_orientation: int | None = None) -> Path:
    """A small image whose content depends on its name (so two fixtures never share bytes by accident)."""
    import zlib

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    seed = zlib.crc32(path.name.encode())
    rgb = (seed % 200 + 20, (seed >> 8) % 200 + 20, (seed >> 16) % 200 + 20)
    img = Image.new("RGB", size, rgb)
    img.paste((255 - rgb[0], 30, 200), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(128)
    elif mode != "RGB":
        img = img.convert(mode)
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    img.save(path, format="PNG" if path.suffix == ".png" else "JPEG", **kwargs)
    return path


def voc_xml(filename, size, objects, folder="images") -> str:
    """objects: (name, xmin, ymin, xmax, ymax[, difficult]) with coordinates as written (str or number)."""
    objs = ""
    for o in objects:
        difficult = o[5] if len(o) > 5 else 0
        objs += (f"<object><name>{o[0]}</name><pose>Unspecified</pose><truncated>0</truncated>"
                 f"<difficult>{difficult}</difficult><bndbox><xmin>{o[1]}</xmin><ymin>{o[2]}</ymin>"
                 f"<xmax>{o[3]}</xmax><ymax>{o[4]}</ymax></bndbox></object>")
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><folder>{folder}</folder><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def write_voc(root: Path, name: str, objects, size=(100, 80), image_size=None, **image_kwargs) -> Path:
    """Kaggle layout: root/images/name + root/annotations/stem.xml."""
    make_image(root / "images" / name, size=image_size or size, **image_kwargs)
    xml = root / "annotations" / (Path(name).stem + ".xml")
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(voc_xml(name, size, objects))
    return xml


@pytest.fixture
def mixed_sources(tmp_path):
    """One small source per format, each with known boxes."""
    # VOC (Kaggle style)
    voc = tmp_path / "kaggle"
    write_voc(voc, "k1.png", [("with_mask", 10, 10, 40, 50), ("mask_weared_incorrect", 50, 20, 90, 70, 1)])
    # YOLO labelImg: classes.txt + txt next to images (normalised cx cy w h)
    yolo = tmp_path / "labelimg_yolo"
    make_image(yolo / "y1.jpg", size=(200, 100))
    (yolo / "classes.txt").write_text("no_mask\nmask\n")
    (yolo / "y1.txt").write_text("0 0.25 0.5 0.2 0.4\n1 0.75 0.5 0.1 0.2\n")
    # YOLO Roboflow: data.yaml + train/valid/test images+labels
    rf_yolo = tmp_path / "roboflow_yolo"
    (rf_yolo).mkdir()
    (rf_yolo / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 3\nnames: ['incorrect_mask', 'mask', 'no-mask']\n")
    for split in ("train", "valid"):
        make_image(rf_yolo / split / "images" / f"r_{split}.jpg", size=(100, 100))
        (rf_yolo / split / "labels").mkdir(parents=True)
        (rf_yolo / split / "labels" / f"r_{split}.txt").write_text("0 0.5 0.5 0.2 0.2\n2 0.2 0.2 0.1 0.1\n")
    # COCO Roboflow: _annotations.coco.json with placeholder category 0
    coco = tmp_path / "roboflow_coco" / "train"
    make_image(coco / "c1.jpg", size=(120, 90))
    (coco / "_annotations.coco.json").write_text(json.dumps({
        "images": [{"id": 0, "file_name": "c1.jpg", "width": 120, "height": 90}],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 2, "bbox": [10, 10, 30, 40], "area": 1200, "iscrowd": 0},
                        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [60.5, 20.25, 30, 30], "area": 900, "iscrowd": 0}],
        "categories": [{"id": 0, "name": "masks-xyz", "supercategory": "none"},
                       {"id": 1, "name": "mask", "supercategory": "masks-xyz"},
                       {"id": 2, "name": "no_mask", "supercategory": "masks-xyz"}]}))
    # CreateML (labelImg): centre x/y + width/height in pixels
    cml = tmp_path / "createml"
    make_image(cml / "m1.jpg", size=(100, 100))
    (cml / "m1.json").write_text(json.dumps([{"image": "m1.jpg", "verified": False, "annotations": [
        {"label": "mask_incorrect", "coordinates": {"x": 50, "y": 40, "width": 20, "height": 30}}]}]))
    return {"voc": voc, "yolo": yolo, "roboflow_yolo": rf_yolo, "coco": coco.parent, "createml": cml}


def boxes_of(ds, name_part: str):
    """[(label, x1, y1, x2, y2, difficult)] of the image whose file name contains name_part."""
    img = next(i for i in ds.images if name_part in i.path.name)
    return sorted((b.label, round(b.x1, 2), round(b.y1, 2), round(b.x2, 2), round(b.y2, 2), b.difficult) for b in img.boxes)
