"""Detection explorer data: images with ground-truth and predicted boxes, each box's match outcome,
per-class counts and the confusion matrix with the images behind every cell.

Inputs: a COCO dataset.json (data_tools.detection.dataset) or a detect run dir (split/<split>.json +
predictions/<split>.json from the infer stage). Matching is tasks.detect.evaluate.match_image, the same
greedy IoU matching the evaluate stage's confusion matrix uses.
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.atomic import read_json
from hackathon.core.errors import HackathonError

BACKGROUND = "background"


def is_detect_run(path: Path) -> bool:
    return path.is_dir() and (path / "data" / "dataset.json").is_file()


def _run_inputs(run_dir: Path) -> tuple[Path, list[dict] | None]:
    """(ground truth json, detections or None): the evaluated split when the run has predictions."""
    for split in ("test", "val"):
        preds = read_json(run_dir / "predictions" / f"{split}.json", default=None)
        gt = run_dir / "split" / f"{split}.json"
        if preds is not None and gt.is_file():
            return gt, preds
    return run_dir / "data" / "dataset.json", None


def detect_data(inputs: list[Path], score_threshold: float = 0.3, iou: float = 0.5) -> dict:
    from data_tools.detection.dataset import load_dataset
    from tasks.detect.evaluate import match_image

    images: list[dict] = []
    classes: list[str] = []
    has_predictions = False
    for path in inputs:
        if path.is_dir():
            if not is_detect_run(path):
                raise HackathonError(f"{path} is not a detect run dir (no data/dataset.json).",
                                     fix="Pass a run dir under runs/detect or a COCO dataset.json.")
            gt_path, dets = _run_inputs(path)
        elif path.suffix == ".json":
            gt_path, dets = path, None
        else:
            raise HackathonError(f"{path}: not a dataset.json or a detect run dir.", fix="Pass a COCO dataset.json.")
        ds = load_dataset(gt_path)
        classes = classes or list(ds.classes)
        if list(ds.classes) != classes:
            raise HackathonError(f"{gt_path} has classes {list(ds.classes)}, the first input {classes}.",
                                 fix="Explore datasets with the same classes together (or one at a time).")
        by_image: dict[int, list[dict]] = {}
        for d in dets or []:
            if d["score"] >= score_threshold:
                by_image.setdefault(d["image_id"], []).append(d)
        has_predictions = has_predictions or dets is not None
        for img in ds.images:
            gts = [{"label": b.label, "box": [b.x1, b.y1, b.x2, b.y2]} for b in img.boxes]
            preds = [{"label": ds.classes[d["category_id"] - 1], "score": round(float(d["score"]), 3),
                      "box": [d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]}
                     for d in sorted(by_image.get(img.id, []), key=lambda d: -d["score"])]
            if dets is not None:
                pairs = match_image([g["box"] for g in gts], [p["box"] for p in preds], iou)
                for gi, pi in pairs:
                    if gi is not None and pi is not None:
                        gts[gi]["match"], preds[pi]["match"] = preds[pi]["label"], gts[gi]["label"]
                    elif gi is not None:
                        gts[gi]["match"] = BACKGROUND  # missed
                    else:
                        preds[pi]["match"] = BACKGROUND  # false positive
            images.append({"id": len(images), "path": str(img.path), "name": img.path.name, "split": img.split or "",
                           "width": img.width, "height": img.height, "gt": gts, "pred": preds})
    if not images:
        raise HackathonError(f"No images in {', '.join(map(str, inputs))}.", fix="Check the dataset.json.")
    labels = classes + [BACKGROUND]
    pos = {c: i for i, c in enumerate(labels)}
    matrix = [[[] for _ in labels] for _ in labels]  # rows = ground truth, columns = prediction; cells = image ids
    counts = {c: {"gt": 0, "pred": 0} for c in classes}
    for im in images:
        cells = []
        for g in im["gt"]:
            counts[g["label"]]["gt"] += 1
            if "match" in g:
                cells.append(matrix[pos[g["label"]]][pos[g["match"]]])
        for p in im["pred"]:
            counts[p["label"]]["pred"] += 1
            if p.get("match") == BACKGROUND:
                cells.append(matrix[pos[BACKGROUND]][pos[p["label"]]])
        for cell in cells:  # an image is listed once per cell, however many of its boxes land there
            if not cell or cell[-1] != im["id"]:
                cell.append(im["id"])
        im["fp"] = sum(1 for p in im["pred"] if p.get("match") == BACKGROUND)
        im["miss"] = sum(1 for g in im["gt"] if g.get("match") == BACKGROUND)
        im["confused"] = sum(1 for g in im["gt"] if g.get("match") not in (None, BACKGROUND, g["label"]))
    return {"kind": "detect", "sources": [str(p) for p in inputs], "classes": classes, "labels": labels,
            "has_predictions": has_predictions, "score_threshold": score_threshold, "iou": iou,
            "counts": counts, "confusion": matrix, "images": images,
            "totals": {"images": len(images), "boxes": sum(len(im["gt"]) for im in images),
                       "predictions": sum(len(im["pred"]) for im in images)}}
