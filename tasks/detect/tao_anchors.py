"""YOLOv3 anchors: k-means on the training boxes' (width, height) with 1 - IoU as the distance.

Same meaning as `tao model yolo_v3 kmeans -n 9 -x W -y H`: boxes are first scaled to the network
input size (the spec's augmentation_config output_width/height), the 9 centroids are sorted by area,
and the smallest 3 / middle 3 / largest 3 become small/mid/big_anchor_shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hackathon.core.errors import HackathonError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def iou_wh(boxes, centroids):
    """IoU of (w, h) pairs aligned at a common corner: (n, k) matrix."""
    import numpy as np

    w = np.minimum(boxes[:, None, 0], centroids[None, :, 0])
    h = np.minimum(boxes[:, None, 1], centroids[None, :, 1])
    inter = w * h
    area_b = (boxes[:, 0] * boxes[:, 1])[:, None]
    area_c = (centroids[:, 0] * centroids[:, 1])[None, :]
    return inter / (area_b + area_c - inter)


def _init_plus_plus(boxes, k: int, rng):
    """k-means++ seeding with the 1 - IoU distance: spread-out starting centroids."""
    import numpy as np

    centroids = [boxes[rng.integers(len(boxes))]]
    for _ in range(1, k):
        d = (1.0 - iou_wh(boxes, np.asarray(centroids))).min(axis=1) ** 2
        total = d.sum()
        idx = rng.choice(len(boxes), p=d / total) if total > 0 else rng.integers(len(boxes))
        centroids.append(boxes[idx])
    return np.asarray(centroids, dtype=np.float64)


def _lloyd(boxes, centroids, max_iter: int):
    import numpy as np

    k = len(centroids)
    assign = np.full(len(boxes), -1)
    for _ in range(max_iter):
        dist = 1.0 - iou_wh(boxes, centroids)
        new_assign = dist.argmin(axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        for j in range(k):
            members = boxes[assign == j]
            if len(members):
                centroids[j] = np.median(members, axis=0)
            else:  # an empty cluster takes the box worst served by the others
                centroids[j] = boxes[dist.min(axis=1).argmax()]
    cost = float((1.0 - iou_wh(boxes, centroids)).min(axis=1).mean())
    return centroids, cost


def kmeans_iou(wh, k: int = 9, seed: int = 42, max_iter: int = 300, restarts: int = 5):
    """k centroids (w, h), sorted by area, minimising the mean 1 - IoU of each box to its nearest one.

    k-means++ seeding and a few restarts (the best kept) so a bad start cannot merge two real shapes."""
    import numpy as np

    boxes = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    boxes = boxes[(boxes[:, 0] > 0) & (boxes[:, 1] > 0)]
    if len(boxes) < k:
        raise HackathonError(f"k-means anchors need at least {k} training boxes, found {len(boxes)}.",
                             fix="Export more labelled training images, or set the three *_anchor_shape fields by hand.")
    rng = np.random.default_rng(seed)
    best, best_cost = None, float("inf")
    for _ in range(restarts):
        centroids, cost = _lloyd(boxes, _init_plus_plus(boxes, k, rng), max_iter)
        if cost < best_cost:
            best, best_cost = centroids, cost
    return best[np.argsort(best[:, 0] * best[:, 1])]


def mean_iou(wh, centroids) -> float:
    """Average best IoU of the boxes with the anchors (what `tao yolo_v3 kmeans` reports as quality)."""
    import numpy as np

    boxes = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    return float(iou_wh(boxes, np.asarray(centroids, dtype=np.float64)).max(axis=1).mean())


def _image_size(label_file: Path, image_dir: Path | None) -> tuple[int, int] | None:
    if image_dir is None:
        return None
    from PIL import Image

    for suffix in IMAGE_SUFFIXES:
        p = image_dir / (label_file.stem + suffix)
        if p.exists():
            with Image.open(p) as im:
                return im.size
    return None


def kitti_boxes_wh(label_dir: Path, image_dir: Path | None, out_w: int, out_h: int):
    """(w, h) of every box in a KITTI label folder, scaled to the network input size.

    When an image is found its size is used for the scaling; otherwise the labels are taken to be at
    the input size already (our KITTI export resizes images to it)."""
    import numpy as np

    label_dir = Path(label_dir)
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise HackathonError(f"No KITTI label files in {label_dir}.", fix="Run the KITTI export stage first.")
    wh = []
    for f in files:
        size = _image_size(f, Path(image_dir) if image_dir else None)
        sx, sy = (out_w / size[0], out_h / size[1]) if size else (1.0, 1.0)
        for n, line in enumerate(f.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 8:
                raise HackathonError(f"{f}:{n}: a KITTI label line has 15 fields, this one has {len(parts)}.",
                                     fix="Re-export the KITTI labels (class 0 0 0 x1 y1 x2 y2 ...).")
            x1, y1, x2, y2 = map(float, parts[4:8])
            wh.append(((x2 - x1) * sx, (y2 - y1) * sy))
    return np.asarray(wh, dtype=np.float64).reshape(-1, 2)


def format_shapes(anchors: Iterable[Iterable[float]]) -> str:
    return "[" + ", ".join(f"({w:.2f}, {h:.2f})" for w, h in anchors) + "]"


def anchor_shapes(centroids) -> dict[str, str]:
    """The three yolov3_config fields from 9 area-sorted centroids."""
    c = [tuple(map(float, x)) for x in centroids]
    if len(c) != 9:
        raise HackathonError(f"YOLOv3 needs 9 anchors, got {len(c)}.", fix="Run k-means with k=9.")
    return {"small_anchor_shape": format_shapes(c[:3]), "mid_anchor_shape": format_shapes(c[3:6]),
            "big_anchor_shape": format_shapes(c[6:])}


def yolo_anchors_from_kitti(label_dir: Path, image_dir: Path | None, out_w: int, out_h: int,
                            seed: int = 42) -> tuple[dict[str, str], float]:
    """(yolov3_config anchor fields, mean IoU) for the training split at the spec's input size."""
    wh = kitti_boxes_wh(label_dir, image_dir, out_w, out_h)
    centroids = kmeans_iou(wh, k=9, seed=seed)
    return anchor_shapes(centroids), mean_iou(wh, centroids)
