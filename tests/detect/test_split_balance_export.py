"""Split (stratified, seeded), balance (train only), KITTI and COCO exports, synth-masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_tools.detection.balance import balance_train
from data_tools.detection.coco_export import export_coco
from data_tools.detection.dataset import load_dataset
from data_tools.detection.ingest import ingest
from data_tools.detection.kitti import export_kitti
from data_tools.detection.split import split_dataset
from data_tools.detection.synth_masks import synth_masks


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    src = synth_masks(root / "synth", num_images=120, seed=3)
    ds_json, _ = ingest([src], root / "ingested")
    return root, ds_json


def test_synth_masks_deterministic_with_rare_class(tmp_path, demo):
    a = synth_masks(tmp_path / "a", num_images=5, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "synth.json")
    for f in files:
        assert (a / f).read_bytes() == (demo[0] / "synth" / f).read_bytes(), f
    counts = load_dataset(demo[1]).box_counts()
    assert counts["with_mask"] > counts["without_mask"] > counts["mask_weared_incorrect"] > 0
    xml = (a / "annotations" / "synthmask00000.xml").read_text()
    assert "<bndbox>" in xml and "<difficult>0</difficult>" in xml and "<size>" in xml


def test_split_stratified_rare_class_everywhere_and_seeded(tmp_path, demo):
    paths = split_dataset(demo[1], tmp_path / "s1", seed=1)
    again = split_dataset(demo[1], tmp_path / "s2", seed=1)
    other = split_dataset(demo[1], tmp_path / "s3", seed=2)
    names = {s: sorted(i.path.name for i in load_dataset(p).images) for s, p in paths.items()}
    assert names == {s: sorted(i.path.name for i in load_dataset(p).images) for s, p in again.items()}
    assert names != {s: sorted(i.path.name for i in load_dataset(p).images) for s, p in other.items()}
    total = sum(len(v) for v in names.values())
    assert total == len(load_dataset(demo[1]).images)
    assert set(names["train"]).isdisjoint(names["test"]) and set(names["val"]).isdisjoint(names["test"])
    for p in paths.values():
        assert load_dataset(p).box_counts()["mask_weared_incorrect"] > 0
    assert 0.6 < len(names["train"]) / total < 0.8
    report = json.loads((tmp_path / "s1" / "split_report.json").read_text())
    assert report["classes_missing_from_a_split"] == []


def test_balance_oversamples_rare_class_in_train_only(tmp_path, demo):
    paths = split_dataset(demo[1], tmp_path / "s", seed=0)
    val_before = paths["val"].read_text()
    out, report = balance_train(paths["train"], tmp_path / "b", target_ratio=0.5, seed=0)
    before, after = report["before"], report["after"]
    assert after["mask_weared_incorrect"] > before["mask_weared_incorrect"]
    assert after["mask_weared_incorrect"] >= min(0.5 * before["with_mask"], 4 * before["mask_weared_incorrect"]) - 4
    assert paths["val"].read_text() == val_before  # val/test untouched
    ds = load_dataset(out)
    assert len(ds.images) == report["images_after"] > report["images_before"]
    for img in ds.images:  # augmented boxes stay inside their (rescaled) images
        for b in img.boxes:
            assert 0 <= b.x1 < b.x2 <= img.width + 1e-6 and 0 <= b.y1 < b.y2 <= img.height + 1e-6


def test_kitti_export_15_fields_lowercase_resized_scaled(tmp_path, demo):
    from PIL import Image

    ds = load_dataset(demo[1])
    out = export_kitti(demo[1], tmp_path / "kitti", 160, 128)
    first = ds.images[0]
    index = json.loads((out / "kitti_index.json").read_text())
    stem = next(s for s, e in index["images"].items() if e["image_id"] == first.id)
    with Image.open(out / "images" / f"{stem}.png") as im:
        assert im.size == (160, 128)
    lines = (out / "labels" / f"{stem}.txt").read_text().splitlines()
    assert len(lines) == len(first.boxes)
    for line, box in zip(lines, first.boxes):
        f = line.split()
        assert len(f) == 15 and f[0] == box.label.lower() and f[0] == f[0].lower()
        assert float(f[4]) == pytest.approx(box.x1 * 160 / first.width, abs=0.01)
        assert float(f[7]) == pytest.approx(box.y2 * 128 / first.height, abs=0.01)
    assert len(list((out / "labels").glob("*.txt"))) == len(ds.images)


def test_coco_export_is_standalone(tmp_path, demo):
    out = export_coco(demo[1], tmp_path / "coco")
    data = json.loads((out / "annotations.json").read_text())
    assert all(not Path(i["file_name"]).is_absolute() and (out / i["file_name"]).exists() for i in data["images"])
    assert {c["id"] for c in data["categories"]} == {1, 2, 3}
    assert len(data["annotations"]) == sum(load_dataset(demo[1]).box_counts().values())
