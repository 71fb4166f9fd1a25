"""Label Studio JSON exports written by hand (its format, no server): `detect ingest` and `prepare-audio` read
them, and every quirk is named with its fix while the rest goes on."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from data_tools.audio import write_wav
from data_tools.detection.dataset import load_dataset
from data_tools.detection.ingest import ingest
from data_tools.prepare_audio import prepare_audio
from hackathon.label.studio import local_url


def rect(label, x1, y1, x2, y2, w=200, h=100, rotation=0):
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": w, "original_height": h,
            "value": {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w, "height": 100 * (y2 - y1) / h,
                      "rotation": rotation, "rectanglelabels": [label]}}


def test_detection_export_boxes_in_pixels_and_quirks_named(tmp_path):
    for name, colour in (("a.jpg", (10, 20, 30)), ("b.jpg", (40, 20, 30)), ("c.jpg", (90, 20, 30))):
        Image.new("RGB", (200, 100), colour).save(tmp_path / name)
    tasks = [
        {"id": 1, "data": {"image": local_url(tmp_path / "a.jpg")}, "annotations": [
            {"id": 1, "was_cancelled": False, "updated_at": "2026-01-01", "result": [rect("hat", 1, 1, 9, 9)]},
            {"id": 2, "was_cancelled": False, "updated_at": "2026-01-02", "result": [
                rect("with_mask", 10, 10, 50, 60), rect("hat", 1, 1, 9, 9), rect("without_mask", 20, 20, 60, 40, rotation=90)]}]},
        {"id": 2, "data": {"image": local_url(tmp_path / "b.jpg")}, "annotations": [{"id": 3, "result": [], "was_cancelled": True}]},
        {"id": 3, "data": {"image": local_url(tmp_path / "gone.jpg")}, "annotations": [{"id": 4, "result": [rect("with_mask", 1, 1, 9, 9)]}]},
        {"id": 4, "data": {"image": local_url(tmp_path / "c.jpg")}, "annotations": [{"id": 5, "result": []}]},
        {"id": 5, "data": {"image": str(tmp_path / "c.jpg")}, "annotations": [], "predictions": [{"result": [rect("with_mask", 1, 1, 9, 9)]}]},
    ]
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "project.json").write_text(json.dumps(tasks))
    ds_json, report = ingest([tmp_path / "export"], tmp_path / "out", html=False)
    ds = load_dataset(ds_json)
    assert [im.path.name for im in ds.images] == ["a.jpg"]  # the newest annotation of task 1 only
    boxes = sorted((b.label, round(b.x1, 3), round(b.y1, 3), round(b.x2, 3), round(b.y2, 3)) for b in ds.images[0].boxes)
    assert boxes == [("with_mask", 10, 10, 50, 60), ("without_mask", 0, 20, 20, 60)]  # 90 deg about its top-left
    assert set(report.counts()) == {"rotated_box", "unknown_class", "skipped_task", "missing_image", "empty_annotation",
                                    "unlabelled_task"}
    assert all(i["fix"] for items in report.issues.values() for i in items)
    assert "gone.jpg" in report.issues["missing_image"][0]["detail"]


def test_transcription_export_to_manifest(tmp_path):
    t = np.arange(16000) / 16000
    clips = []
    for i in range(3):
        clips.append(tmp_path / "rec" / f"spk{i}" / "c.wav")
        clips[-1].parent.mkdir(parents=True)
        write_wav(str(clips[-1]), (0.3 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype("float32"), 16000)

    def text(x):
        return [{"type": "textarea", "from_name": "transcription", "to_name": "audio", "value": {"text": [x]}}]
    tasks = [{"id": 1, "data": {"audio": local_url(clips[0])}, "annotations": [{"id": 1, "result": text("你好，大白")}]},
             {"id": 2, "data": {"audio": local_url(clips[1])}, "annotations": [{"id": 2, "result": text("请让我进入小区")}]},
             {"id": 3, "data": {"audio": local_url(clips[2])}, "annotations": [{"id": 3, "result": [], "was_cancelled": True}]},
             {"id": 4, "data": {"audio": local_url(tmp_path / "rec" / "gone.wav")}, "annotations": [{"id": 4, "result": text("请")}]},
             {"id": 5, "data": {"audio": local_url(clips[2])}, "annotations": [{"id": 5, "result": text("  ")}]}]
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "t.json").write_text(json.dumps(tasks, ensure_ascii=False, indent=1))
    result = prepare_audio(tmp_path / "export", tmp_path / "out", task="asr")
    rows = [json.loads(ln) for ln in result.manifest_path.read_text(encoding="utf-8").splitlines()]
    assert sorted((r["speaker"], r["text"]) for r in rows) == [("spk0", "你好大白"), ("spk1", "请让我进入小区")]
    assert sorted(r["kind"] for r in result.rejected) == ["empty_annotation", "missing_media", "skipped_task"]
    assert all(r["fix"] for r in result.rejected)
