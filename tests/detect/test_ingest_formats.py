"""Each annotation format, and a mix of all four, gives the right boxes and canonical classes."""

from __future__ import annotations

import json

from conftest import boxes_of

from data_tools.detection.dataset import load_dataset
from data_tools.detection.formats import detect_formats
from data_tools.detection.ingest import ingest


def test_layout_detection(mixed_sources):
    assert detect_formats(mixed_sources["voc"]) == ["voc"]
    assert detect_formats(mixed_sources["yolo"]) == ["yolo"]
    assert detect_formats(mixed_sources["roboflow_yolo"]) == ["yolo"]
    assert detect_formats(mixed_sources["coco"]) == ["coco"]
    assert detect_formats(mixed_sources["createml"]) == ["createml"]


def test_voc_kaggle_layout(mixed_sources, tmp_path):
    ds_json, report = ingest([mixed_sources["voc"]], tmp_path / "out")
    ds = load_dataset(ds_json)
    assert boxes_of(ds, "k1") == [("mask_weared_incorrect", 50, 20, 90, 70, True), ("with_mask", 10, 10, 40, 50, False)]


def test_yolo_labelimg_classes_txt(mixed_sources, tmp_path):
    ds = load_dataset(ingest([mixed_sources["yolo"]], tmp_path / "out")[0])
    # 200x100 image: 0 0.25 0.5 0.2 0.4 -> no_mask (30,30)-(70,70); 1 0.75 0.5 0.1 0.2 -> mask (140,40)-(160,60)
    assert boxes_of(ds, "y1") == [("with_mask", 140, 40, 160, 60, False), ("without_mask", 30, 30, 70, 70, False)]


def test_yolo_roboflow_data_yaml_all_splits(mixed_sources, tmp_path):
    ds = load_dataset(ingest([mixed_sources["roboflow_yolo"]], tmp_path / "out")[0])
    assert sorted(i.path.name for i in ds.images) == ["r_train.jpg", "r_valid.jpg"]
    assert boxes_of(ds, "r_train") == [("mask_weared_incorrect", 40, 40, 60, 60, False), ("without_mask", 15, 15, 25, 25, False)]


def test_coco_roboflow_drops_placeholder_category(mixed_sources, tmp_path):
    ds_json, report = ingest([mixed_sources["coco"]], tmp_path / "out")
    ds = load_dataset(ds_json)
    assert boxes_of(ds, "c1") == [("with_mask", 60.5, 20.25, 90.5, 50.25, False), ("without_mask", 10, 10, 40, 50, False)]
    assert "unknown_class" not in report.counts()
    assert [c["name"] for c in json.loads(ds_json.read_text())["categories"]] == ["with_mask", "without_mask", "mask_weared_incorrect"]


def test_createml_centre_coordinates(mixed_sources, tmp_path):
    ds = load_dataset(ingest([mixed_sources["createml"]], tmp_path / "out")[0])
    assert boxes_of(ds, "m1") == [("mask_weared_incorrect", 40, 25, 60, 55, False)]


def test_mix_of_all_four_formats(mixed_sources, tmp_path):
    ds_json, report = ingest(list(mixed_sources.values()), tmp_path / "out")
    ds = load_dataset(ds_json)
    assert len(ds.images) == 6
    assert ds.box_counts() == {"with_mask": 3, "without_mask": 4, "mask_weared_incorrect": 4}
    assert {tuple(s["formats"]) for s in report.sources} == {("voc",), ("yolo",), ("coco",), ("createml",)}
    assert (tmp_path / "out" / "report.html").read_text().count("<img") >= 2
    summary = json.loads((tmp_path / "out" / "report.json").read_text())
    assert summary["class_counts"] == ds.box_counts()
    # images are copied into the output, sources untouched
    assert all(i.path.parent == (tmp_path / "out" / "images") and i.path.exists() for i in ds.images)


def test_one_source_dir_holding_several_formats(mixed_sources, tmp_path):
    import shutil

    both = tmp_path / "both"
    shutil.copytree(mixed_sources["voc"], both / "voc")
    shutil.copytree(mixed_sources["createml"], both / "cml")
    ds_json, report = ingest([both], tmp_path / "out")
    assert report.sources[0]["formats"] == ["voc", "createml"]
    assert len(load_dataset(ds_json).images) == 2
