"""Bench: pycocotools scoring of 1 000 images (target < 3 s), the way the evaluate stage runs it.

Ground truth: 1 000 images x 1-4 faces (3 classes, rare third class). Detections: per image the true boxes
jittered plus false positives, ~20 per image after a 0.01 score threshold (what SSD/TAO inference keeps).
Prints the time of COCOeval alone and of the whole score_coco (VOC AP, PR curves, confusion matrix,
samples) and the ratio to the 3 s target.

    .venv/bin/python bench/coco_eval.py [--images 1000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_SECONDS = 3.0


def make_ground_truth(root: Path, n_images: int):
    from PIL import Image

    from data_tools.detection.dataset import Box, Dataset, ImageRecord, save_dataset

    rng = random.Random(0)
    blank = root / "blank.jpg"
    Image.new("RGB", (320, 320), (90, 120, 150)).save(blank)
    images = []
    for i in range(n_images):
        boxes = []
        for _ in range(rng.randint(1, 4)):
            x, y, s = rng.uniform(0, 220), rng.uniform(0, 220), rng.uniform(30, 100)
            label = rng.choices(["with_mask", "without_mask", "mask_weared_incorrect"], [0.7, 0.22, 0.08])[0]
            boxes.append(Box(label, x, y, x + s, y + s * 1.2))
        images.append(ImageRecord(blank, 320, 320, boxes))
    return save_dataset(Dataset(images), root / "gt.json")


def make_detections(gt_json: Path, per_image: int = 20):
    from data_tools.detection.dataset import load_dataset

    rng = random.Random(1)
    ds = load_dataset(gt_json)
    dets = []
    for img in ds.images:
        for b in img.boxes:
            j = lambda v: v + rng.uniform(-6, 6)  # noqa: E731
            cat = ds.category_id(b.label) if rng.random() < 0.85 else rng.randint(1, 3)
            dets.append({"image_id": img.id, "category_id": cat, "score": rng.uniform(0.4, 1.0),
                         "bbox": [j(b.x1), j(b.y1), b.width, b.height]})
        for _ in range(per_image - len(img.boxes)):
            x, y, s = rng.uniform(0, 250), rng.uniform(0, 250), rng.uniform(10, 80)
            dets.append({"image_id": img.id, "category_id": rng.randint(1, 3), "score": rng.uniform(0.01, 0.6),
                         "bbox": [x, y, s, s]})
    return dets


def main() -> None:
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    from tasks.detect.evaluate import coco_from_dataset, score_coco

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt_json = make_ground_truth(root, args.images)
        dets = make_detections(gt_json)
        t0 = time.perf_counter()
        gt = coco_from_dataset(gt_json)
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        cocoeval_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = score_coco(gt_json, dets, root / "eval", samples=6)
        full_s = time.perf_counter() - t0
    print(f"images={args.images} detections={len(dets)} map50={metrics['map50']:.3f}")
    print(f"COCOeval evaluate+accumulate+summarize: {cocoeval_s:.2f} s  ({cocoeval_s / TARGET_SECONDS:.2f} x the {TARGET_SECONDS:.0f} s target)")
    print(f"score_coco (COCOeval + VOC AP + PR curves + confusion + samples): {full_s:.2f} s  "
          f"({full_s / TARGET_SECONDS:.2f} x the {TARGET_SECONDS:.0f} s target)")


if __name__ == "__main__":
    main()
