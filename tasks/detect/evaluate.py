"""Scoring for every detect backend: pycocotools COCOeval (mAP@[.5:.95], mAP@.5, per-class AP@.5), VOC-style
AP@0.5 (what TAO prints), precision-recall curves, a confusion matrix and sample predictions drawn.

Both backends produce COCO results (`[{image_id, category_id, bbox: [x, y, w, h], score}]` in original
image pixels): torch directly, TAO through `kitti_predictions_to_coco`. So a TAO run and a torch run on the
same split are scored by the same code.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from hackathon.core.atomic import atomic_path, atomic_write_json, read_json
from hackathon.core.errors import HackathonError

from data_tools.detection.dataset import Dataset, box_iou, load_dataset

CLASS_COLOURS = [(40, 200, 60), (230, 60, 50), (250, 170, 20), (60, 120, 240), (200, 80, 220)]
# What leads report.html (with the "AP@0.5 per class" table, marked headline in assets.json).
HEADLINE = [{"key": "map50", "label": "mAP@0.5", "better": "higher"}, {"key": "map", "label": "mAP@[.5:.95]", "better": "higher"},
            {"key": "voc_ap50", "label": "VOC AP@0.5 (as TAO)", "better": "higher"}]


# ----------------------------------------------------------------------------- TAO KITTI output -> COCO

def _load_index(kitti_index) -> dict | None:
    if kitti_index is None:
        return None
    if isinstance(kitti_index, dict):
        return kitti_index
    data = read_json(kitti_index)
    if data is None:
        raise HackathonError(f"KITTI index {kitti_index} not found.",
                             fix="Pass the kitti_index.json written by export_kitti next to the exported images.")
    return data


def kitti_predictions_to_coco(kitti_dir: str | os.PathLike, dataset_json: str | os.PathLike,
                              kitti_index: str | os.PathLike | dict | None = None,
                              resized_size: tuple[int, int] | None = None) -> list[dict]:
    """Convert TAO inference label files (`<stem>.txt`, lines `cls 0 0 0 x1 y1 x2 y2 0 0 0 0 0 0 0 score`)
    into COCO results for the images of `dataset_json`, in original image pixels.

    Image and scale lookup, in this order:
    - `kitti_index` (the kitti_index.json written by export_kitti, or its dict): stem -> image id and the
      resize scale; TAO ran on those resized images, so boxes are divided by the scale.
    - otherwise stems are matched to the dataset's file stems (an export's `000123_` prefix is ignored),
      and boxes are scaled from `resized_size` = (width, height) to each image's size when given, or
      taken as original pixels when not.
    Class names are matched case-insensitively to the dataset's categories. Lines that cannot be parsed or
    name an unknown class raise HackathonError naming the file and line (TAO output is never guessed at).
    """
    from data_tools.detection.kitti import parse_kitti_line

    kitti_dir = Path(kitti_dir)
    if not kitti_dir.is_dir():
        raise HackathonError(f"TAO inference label dir {kitti_dir} does not exist.",
                             fix="Run the TAO inference stage first; it writes one KITTI .txt per image.")
    ds = load_dataset(dataset_json)
    cat_ids = {name.lower(): i for i, name in enumerate(ds.classes, start=1)}
    index = _load_index(kitti_index)
    if index is not None:  # stem -> (image id, scale x, scale y)
        by_stem = {stem: (int(e["image_id"]), float(e["scale_x"]), float(e["scale_y"]))
                   for stem, e in index["images"].items()}
    else:
        rw, rh = resized_size or (None, None)
        by_stem = {img.path.stem: (int(img.id), (rw or img.width) / img.width, (rh or img.height) / img.height)
                   for img in ds.images}
    results = []
    for txt in sorted(kitti_dir.glob("*.txt")):
        stem = txt.stem
        key = stem if stem in by_stem else re.sub(r"^\d{6}_", "", stem)
        if key not in by_stem:
            raise HackathonError(f"TAO output {txt} matches no image of {dataset_json}.",
                                 fix="Score with the kitti_index.json of the export TAO ran inference on.")
        image_id, sx, sy = by_stem[key]
        for n, line in enumerate(txt.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                det = parse_kitti_line(line)
            except ValueError as exc:
                raise HackathonError(f"{txt}:{n}: cannot parse KITTI line ({exc}): {line!r}",
                                     fix="TAO inference writes `cls 0 0 0 x1 y1 x2 y2 0 0 0 0 0 0 0 score` lines.")
            cat = cat_ids.get(det["label"].lower())
            if cat is None:
                raise HackathonError(f"{txt}:{n}: class {det['label']!r} is not one of {list(ds.classes)}.",
                                     fix="Check target_class_mapping in the TAO spec.")
            x1, y1, x2, y2 = det["bbox"]
            x1, x2, y1, y2 = x1 / sx, x2 / sx, y1 / sy, y2 / sy
            results.append({"image_id": image_id, "category_id": cat, "score": det["score"],
                            "bbox": [x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)]})
    return results


# ----------------------------------------------------------------------------- COCOeval

def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def coco_from_dataset(dataset_json: str | os.PathLike):
    """pycocotools COCO object for our dataset.json (no console chatter)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = read_json(dataset_json)
    if coco.dataset is None:
        raise HackathonError(f"Ground-truth dataset {dataset_json} not found.", fix="Run the split stage first.")
    with _quiet():
        coco.createIndex()
    return coco


def _check_detections(detections: list[dict], gt) -> list[dict]:
    valid_images = set(gt.getImgIds())
    valid_cats = set(gt.getCatIds())
    out = []
    for i, d in enumerate(detections):
        try:
            if d["image_id"] not in valid_images or d["category_id"] not in valid_cats or len(d["bbox"]) != 4:
                raise KeyError
            out.append({"image_id": int(d["image_id"]), "category_id": int(d["category_id"]),
                        "bbox": [float(v) for v in d["bbox"]], "score": float(d["score"])})
        except (KeyError, TypeError, ValueError):
            raise HackathonError(f"Detection #{i} {d!r} does not fit the ground truth (unknown image/category or bad bbox).",
                                 fix="Detections must be COCO results for the same dataset.json: image_id, category_id, bbox [x,y,w,h], score.")
    return out


def voc_ap(recall, precision, mode: str = "integrate") -> float:
    """PASCAL VOC AP: 'integrate' = all-point interpolation (VOC2010+), 'sample' = 11-point (VOC2007).
    TAO's eval_config.average_precision_mode uses the same two names."""
    import numpy as np

    if mode == "sample":
        return float(np.mean([precision[recall >= t].max() if np.any(recall >= t) else 0.0
                              for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _xyxy(bbox):
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def _group(items, key):
    out: dict = {}
    for it in items:
        out.setdefault(key(it), []).append(it)
    return out


def _match_group(dets: list[dict], gts: list[dict], iou: float):
    """TP/FP flags (None = ignored, hit a difficult box) of one image+class, detections sorted by score.
    A detection's flag only depends on higher-scored detections of the same image, so per-group matching
    equals VOC's global-order matching."""
    import numpy as np

    if not gts:
        return [0] * len(dets)
    ious = box_iou([_xyxy(d["bbox"]) for d in dets], [_xyxy(a["bbox"]) for a in gts])
    used = np.zeros(len(gts), dtype=bool)
    flags = []
    for i in range(len(dets)):
        j = int(np.argmax(ious[i]))
        if ious[i, j] < iou:
            flags.append(0)
        elif gts[j].get("difficult"):
            flags.append(None)  # neither TP nor FP
        elif used[j]:
            flags.append(0)
        else:
            used[j] = True
            flags.append(1)
    return flags


def voc_ap50_per_class(gt_coco, detections: list[dict], mode: str = "integrate", iou: float = 0.5) -> dict[int, float]:
    """VOC-style AP per category at IoU `iou`; `difficult` ground truth is neither a hit nor a miss."""
    import numpy as np

    gts = _group(gt_coco.dataset["annotations"], lambda a: (a["image_id"], a["category_id"]))
    groups = _group(detections, lambda d: (d["image_id"], d["category_id"]))
    scored: dict[int, list[tuple[float, int]]] = {}
    for key, dets in groups.items():
        dets = sorted(dets, key=lambda d: -d["score"])
        for d, flag in zip(dets, _match_group(dets, gts.get(key, []), iou)):
            if flag is not None:
                scored.setdefault(key[1], []).append((d["score"], flag))
    out = {}
    for cat in gt_coco.getCatIds():
        n_pos = sum(1 for a in gt_coco.dataset["annotations"] if a["category_id"] == cat and not a.get("difficult"))
        if n_pos == 0:
            out[cat] = float("nan")
            continue
        pairs = sorted(scored.get(cat, []), key=lambda p: -p[0])
        tp = np.array([f for _, f in pairs], dtype=float)
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        recall = ctp / n_pos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
        out[cat] = voc_ap(recall, precision, mode) if len(pairs) else 0.0
    return out


def confusion_matrix(gt_coco, detections: list[dict], score_threshold: float = 0.3, iou: float = 0.5):
    """(n+1)x(n+1) counts, rows = ground truth class (+ 'background' = false positive),
    columns = predicted class (+ 'background' = missed). Greedy matching by score, class-agnostic IoU."""
    import numpy as np

    cats = gt_coco.getCatIds()
    pos = {c: i for i, c in enumerate(cats)}
    bg = len(cats)
    matrix = np.zeros((bg + 1, bg + 1), dtype=int)
    dets_by_img = _group([d for d in detections if d["score"] >= score_threshold], lambda d: d["image_id"])
    for img_id in gt_coco.getImgIds():
        gts = gt_coco.imgToAnns.get(img_id, [])
        dets = sorted(dets_by_img.get(img_id, []), key=lambda d: -d["score"])
        for j, i in match_image([_xyxy(a["bbox"]) for a in gts], [_xyxy(d["bbox"]) for d in dets], iou):
            row = bg if j is None else pos[gts[j]["category_id"]]
            col = bg if i is None else pos[dets[i]["category_id"]]
            matrix[row, col] += 1
    return matrix


def match_image(gt_boxes: list, det_boxes: list, iou: float = 0.5) -> list[tuple[int | None, int | None]]:
    """Greedy class-agnostic matching of one image's detections (sorted by score, best first) to its ground
    truth, boxes as x1,y1,x2,y2: (gt index, det index) pairs; (gt, None) = missed, (None, det) = false positive."""
    import numpy as np

    ious = box_iou(det_boxes, gt_boxes)
    matched_gt: set[int] = set()
    pairs: list[tuple[int | None, int | None]] = []
    for i in range(len(det_boxes)):
        best, best_iou = None, iou
        for j in range(len(gt_boxes)):
            if j not in matched_gt and ious[i, j] >= best_iou:
                best, best_iou = j, ious[i, j]
        if best is not None:
            matched_gt.add(best)
        pairs.append((best, i))
    pairs += [(j, None) for j in range(len(gt_boxes)) if j not in matched_gt]
    return pairs


# ----------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, target: Path, caption: str) -> dict:
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    _pyplot().close(fig)
    return {"path": target.name, "caption": caption}


def _plot_pr_curves(coco_eval, names: dict[int, str], out_dir: Path) -> dict:
    import numpy as np

    recall = np.linspace(0, 1, 101)
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]
    fig, ax = _pyplot().subplots(figsize=(5, 4))
    for k, cat in enumerate(coco_eval.params.catIds):
        p = precision[0, :, k, 0, -1]
        valid = p > -1
        ax.plot(recall[valid], p[valid], label=names[cat])
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall at IoU 0.5", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return _save_figure(fig, out_dir / "pr_curves.png", "Precision-recall curves per class (IoU 0.5, COCO 101-point)")


def _plot_confusion(matrix, labels: list[str], out_dir: Path, threshold: float) -> dict:
    fig, ax = _pyplot().subplots(figsize=(5.5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="ground truth", title=f"Confusion (score >= {threshold}, IoU >= 0.5)")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    return _save_figure(fig, out_dir / "confusion_matrix.png",
                        "Confusion matrix; 'background' row = false positives, column = missed faces")


def draw_predictions(ds: Dataset, detections: list[dict], out_dir: Path, count: int, score_threshold: float) -> list[dict]:
    """Draw ground truth (thin white) and predictions >= score_threshold (class colour + score) on `count`
    images spread over the dataset."""
    from PIL import Image, ImageDraw

    if count <= 0 or not ds.images:
        return []
    by_img = _group([d for d in detections if d["score"] >= score_threshold], lambda d: d["image_id"])
    step = max(1, len(ds.images) // count)
    assets = []
    (out_dir / "samples").mkdir(parents=True, exist_ok=True)
    for img in ds.images[::step][:count]:
        with Image.open(img.path) as im:
            canvas = im.convert("RGB")
        draw = ImageDraw.Draw(canvas)
        for b in img.boxes:
            draw.rectangle([b.x1, b.y1, b.x2, b.y2], outline=(255, 255, 255), width=1)
        for d in by_img.get(img.id, []):
            x1, y1, x2, y2 = _xyxy(d["bbox"])
            colour = CLASS_COLOURS[(d["category_id"] - 1) % len(CLASS_COLOURS)]
            draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
            draw.text((x1 + 2, max(0, y1 - 11)), f"{ds.classes[d['category_id'] - 1]} {d['score']:.2f}", fill=colour)
        target = out_dir / "samples" / f"{img.id:06d}_{img.path.stem}.png"
        with atomic_path(target) as tmp:
            canvas.save(tmp, format="PNG")
        assets.append({"path": f"samples/{target.name}",
                       "caption": f"{img.path.name}: predictions (colour) vs ground truth (white)"})
    return assets


# ----------------------------------------------------------------------------- the one entry point

def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    return None if isinstance(value, float) and value != value else value


def score_coco(gt_dataset_json: str | os.PathLike, detections: list[dict], out_dir: str | os.PathLike,
               samples: int = 6, confusion_threshold: float = 0.3, voc_mode: str = "integrate") -> dict:
    """Score COCO-format `detections` against the dataset.json ground truth; write artifacts to out_dir.

    Returns the flat metrics dict (also written to out_dir/metrics.json):
      map (AP@[.5:.95]), map50 (AP@.5), ap50_per_class {class: AP@.5}, ap50_<class> (same, flat),
      voc_ap50 (mean VOC AP@0.5 as TAO reports it; `difficult` boxes ignored), voc_ap50_per_class,
      num_images, num_detections.
    Artifacts: pr_curves.png, confusion_matrix.png (+ .json), samples/*.png with predictions drawn,
    detections.json, and assets.json (report_assets form, paths relative to out_dir).
    """
    import numpy as np
    from pycocotools.cocoeval import COCOeval

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gt = coco_from_dataset(gt_dataset_json)
    dets = _check_detections(detections, gt)
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    cat_ids = sorted(names)
    if dets:
        with _quiet():
            dt = gt.loadRes(dets)
            coco_eval = COCOeval(gt, dt, iouType="bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        stats = [float(s) for s in coco_eval.stats]
        per_class = {}
        for k, cat in enumerate(coco_eval.params.catIds):
            p = coco_eval.eval["precision"][0, :, k, 0, -1]
            per_class[names[cat]] = float(np.mean(p[p > -1])) if np.any(p > -1) else float("nan")
    else:
        coco_eval, stats = None, [0.0] * 12
        per_class = {names[c]: 0.0 for c in cat_ids}
    voc = voc_ap50_per_class(gt, dets, voc_mode)
    voc_named = {names[c]: v for c, v in voc.items()}
    finite_voc = [v for v in voc.values() if not np.isnan(v)]
    metrics = {
        "map": max(stats[0], 0.0), "map50": max(stats[1], 0.0), "map75": max(stats[2], 0.0),
        "ap50_per_class": per_class, "voc_ap50": float(np.mean(finite_voc)) if finite_voc else 0.0,
        "voc_ap50_per_class": voc_named, "num_images": len(gt.getImgIds()), "num_detections": len(dets),
    }
    metrics.update({f"ap50_{name}": v for name, v in per_class.items()})
    metrics = _nan_to_none(metrics)  # a class absent from the split has no AP: null, not NaN (invalid JSON)
    assets = [] if coco_eval is None else [_plot_pr_curves(coco_eval, names, out)]
    matrix = confusion_matrix(gt, dets, confusion_threshold)
    labels = [names[c] for c in cat_ids] + ["background"]
    atomic_write_json(out / "confusion_matrix.json", {"labels": labels, "matrix": matrix.tolist(),
                                                      "score_threshold": confusion_threshold})
    assets.append(_plot_confusion(matrix, labels, out, confusion_threshold))
    assets += draw_predictions(load_dataset(gt_dataset_json), dets, out, samples, confusion_threshold)
    atomic_write_json(out / "detections.json", dets, indent=None)  # 20k+ entries: compact is 4x faster
    atomic_write_json(out / "assets.json", {"images": assets, "headline": HEADLINE, "tables": [{
        "title": "AP@0.5 per class", "headline": True, "rows": [{"class": n, "coco_ap50": metrics["ap50_per_class"].get(n), "voc_ap50": metrics["voc_ap50_per_class"].get(n)}
                                                for n in (names[c] for c in cat_ids)]}]})
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def score_run(ctx, gt_json: Path, detections: list[dict], tables: list[dict] = ()) -> dict:
    """score_coco with the spec's eval settings into eval/ (any backend): metrics.json + the run's report assets."""
    from hackathon.core.report import add_report_assets

    e = ctx.cfg.eval
    out = ctx.dir("eval")
    metrics = score_coco(gt_json, detections, out, samples=int(e.samples),
                         confusion_threshold=float(e.confusion_threshold), voc_mode=str(e.voc_mode))
    ctx.write_metrics({**metrics, "eval_split": str(e.split)})
    assets = read_json(out / "assets.json")
    add_report_assets(ctx.run_dir, images=assets["images"], tables=assets["tables"] + list(tables), prefix="eval/",
                      headline=assets["headline"])
    return metrics


def evaluate_stage(ctx) -> None:
    """Score the infer stage's detections (predictions/<split>.json) on the eval split."""
    from tasks.detect.stages import split_json

    e = ctx.cfg.eval
    dets = read_json(ctx.run_dir / "predictions" / f"{e.split}.json")
    if dets is None:
        raise HackathonError(f"No detections at {ctx.run_dir / 'predictions' / (e.split + '.json')}.",
                             fix="Run the infer stage first: hackathon run detect --from infer")
    metrics = score_run(ctx, split_json(ctx, e.split), dets)
    ctx.log.info("%s: mAP@.5 %.3f, mAP %.3f, per class %s", e.split, metrics["map50"], metrics["map"],
                 {k: round(v, 3) for k, v in metrics["ap50_per_class"].items()})
