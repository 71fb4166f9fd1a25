"""pycocotools scoring: ground truth as predictions is perfect; worse predictions score lower; TAO KITTI
output converts back to original pixels."""

from __future__ import annotations

import json

import pytest

from data_tools.detection.dataset import load_dataset
from data_tools.detection.ingest import ingest
from data_tools.detection.kitti import export_kitti
from data_tools.detection.synth_masks import synth_masks
from hackathon.core.errors import HackathonError
from tasks.detect.evaluate import kitti_predictions_to_coco, score_coco, voc_ap


@pytest.fixture(scope="module")
def gt(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    ds_json, _ = ingest([synth_masks(root / "synth", num_images=30, seed=5)], root / "data")
    return ds_json


def _gt_as_detections(ds, score=1.0):
    return [{"image_id": im.id, "category_id": ds.category_id(b.label), "bbox": [b.x1, b.y1, b.width, b.height],
             "score": score} for im in ds.images for b in im.boxes]


def test_ground_truth_as_predictions_scores_one(gt, tmp_path):
    m = score_coco(gt, _gt_as_detections(load_dataset(gt)), tmp_path / "e")
    assert m["map"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0) and m["voc_ap50"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in m["ap50_per_class"].values())
    for f in ("pr_curves.png", "confusion_matrix.png", "metrics.json", "assets.json"):
        assert (tmp_path / "e" / f).exists(), f
    assert list((tmp_path / "e" / "samples").glob("*.png"))
    cm = json.loads((tmp_path / "e" / "confusion_matrix.json").read_text())
    n = len(cm["labels"]) - 1
    assert all(cm["matrix"][i][j] == 0 for i in range(n + 1) for j in range(n + 1) if i != j)


def test_wrong_class_and_shifted_boxes_score_lower(gt, tmp_path):
    ds = load_dataset(gt)
    dets = _gt_as_detections(ds)
    swapped = [{**d, "category_id": 2 if d["category_id"] == 1 else d["category_id"]} for d in dets]
    m = score_coco(gt, swapped, tmp_path / "a")
    assert m["ap50_per_class"]["with_mask"] == 0.0 and m["map50"] < 1.0
    shifted = [{**d, "bbox": [d["bbox"][0] + d["bbox"][2] * 0.6, *d["bbox"][1:]]} for d in dets]
    assert score_coco(gt, shifted, tmp_path / "b")["map50"] == 0.0
    assert score_coco(gt, [], tmp_path / "c")["map50"] == 0.0


def test_detections_for_unknown_images_are_refused(gt, tmp_path):
    with pytest.raises(HackathonError):
        score_coco(gt, [{"image_id": 99999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], tmp_path)


def test_voc_ap_modes():
    import numpy as np

    rec, prec = np.array([0.5, 1.0]), np.array([1.0, 0.5])
    assert voc_ap(rec, prec, "integrate") == pytest.approx(0.75)
    assert voc_ap(rec, prec, "sample") == pytest.approx((6 * 1.0 + 5 * 0.5) / 11)


def test_difficult_boxes_ignored_by_voc_ap(tmp_path):
    from conftest import write_voc

    src = tmp_path / "src"
    write_voc(src, "d.png", [("with_mask", 10, 10, 40, 40), ("with_mask", 50, 10, 80, 40, 1)])
    ds_json, _ = ingest([src], tmp_path / "out")
    ds = load_dataset(ds_json)
    only_easy = [d for d in _gt_as_detections(ds) if d["bbox"][0] == 10]
    m = score_coco(ds_json, only_easy, tmp_path / "e")
    assert m["voc_ap50"] == pytest.approx(1.0)  # the missed difficult box does not count
    assert m["map50"] < 1.0  # COCO has no difficult flag: it counts as missed


def test_tao_kitti_output_maps_back_to_original_pixels(gt, tmp_path):
    ds = load_dataset(gt)
    export = export_kitti(gt, tmp_path / "kitti", 300, 200)
    pred = tmp_path / "tao_inference_labels"
    pred.mkdir()
    for label in (export / "labels").glob("*.txt"):  # TAO writes 16 fields: the 15 + confidence
        (pred / label.name).write_text("".join(line.rstrip() + " 0.87\n" for line in label.read_text().splitlines()))
    dets = kitti_predictions_to_coco(pred, gt, kitti_index=export / "kitti_index.json")
    assert len(dets) == sum(len(i.boxes) for i in ds.images)
    assert {d["score"] for d in dets} == {0.87}
    m = score_coco(gt, dets, tmp_path / "e")
    assert m["map"] == pytest.approx(1.0, abs=1e-3)
    # without the index: stems matched and scaled from the resized size
    dets2 = kitti_predictions_to_coco(pred, gt, resized_size=(300, 200))
    assert score_coco(gt, dets2, tmp_path / "e2")["map"] == pytest.approx(1.0, abs=1e-3)


def test_bad_tao_lines_name_file_and_line(gt, tmp_path):
    pred = tmp_path / "p"
    pred.mkdir()
    stem = load_dataset(gt).images[0].path.stem
    (pred / f"{stem}.txt").write_text("with_mask 0 0 0 1 2 3\n")
    with pytest.raises(HackathonError, match=f"{stem}.txt:1"):
        kitti_predictions_to_coco(pred, gt)
    (pred / f"{stem}.txt").write_text("face 0.00 0 0.00 1 2 3 4 0 0 0 0 0 0 0 0.5\n")
    with pytest.raises(HackathonError, match="face"):
        kitti_predictions_to_coco(pred, gt)


def test_class_absent_from_ground_truth_is_null_not_nan(tmp_path):
    from conftest import write_voc

    src = tmp_path / "src"
    write_voc(src, "a.png", [("with_mask", 10, 10, 40, 40)])
    ds_json, _ = ingest([src], tmp_path / "out")
    m = score_coco(ds_json, _gt_as_detections(load_dataset(ds_json)), tmp_path / "e")
    assert m["ap50_per_class"]["with_mask"] == pytest.approx(1.0)
    assert m["ap50_per_class"]["mask_weared_incorrect"] is None and m["voc_ap50_per_class"]["without_mask"] is None
    assert "NaN" not in (tmp_path / "e" / "metrics.json").read_text() + (tmp_path / "e" / "assets.json").read_text()
