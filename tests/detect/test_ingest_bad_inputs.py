"""Every bad input is fixed or rejected, reported, and never stops the rest of the batch."""

from __future__ import annotations

import json

import pytest
from conftest import boxes_of, make_image, write_voc

from data_tools.detection.dataset import load_dataset
from data_tools.detection.ingest import ingest
from hackathon.core.errors import HackathonError


def _ingest(tmp_path, src):
    ds_json, report = ingest([src], tmp_path / "out")
    return load_dataset(ds_json), report.counts(), report


def test_boxes_outside_image_clipped_or_dropped(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "a.png", [("with_mask", -5, 10, 40, 95), ("without_mask", 120, 10, 150, 40), ("with_mask", 60, 5, 90, 30)],
              size=(100, 80))
    ds, counts, _ = _ingest(tmp_path, src)
    assert boxes_of(ds, "a") == [("with_mask", 0, 10, 40, 80, False), ("with_mask", 60, 5, 90, 30, False)]
    assert counts["box_clipped"] == 1 and counts["box_outside_image"] == 1


def test_zero_area_and_inverted_boxes_dropped(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "a.png", [("with_mask", 10, 10, 10, 40), ("with_mask", 50, 40, 30, 60), ("with_mask", 5, 5, 20, 20)])
    ds, counts, report = _ingest(tmp_path, src)
    assert boxes_of(ds, "a") == [("with_mask", 5, 5, 20, 20, False)]
    assert counts["zero_area_box"] == 1 and counts["inverted_box"] == 1
    assert "a.xml" in report.issues["inverted_box"][0]["file"]


def test_unknown_class_reported_not_guessed(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "a.png", [("face_shield", 10, 10, 40, 40), ("No-Mask", 50, 10, 80, 40)])
    ds, counts, report = _ingest(tmp_path, src)
    assert boxes_of(ds, "a") == [("without_mask", 50, 10, 80, 40, False)]  # alias with odd case/dash still maps
    assert counts["unknown_class"] == 1 and "face_shield" in report.issues["unknown_class"][0]["detail"]


def test_missing_and_corrupt_images_rejected_rest_goes_on(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "good.png", [("with_mask", 10, 10, 40, 40)])
    (src / "annotations" / "gone.xml").write_text(
        (src / "annotations" / "good.xml").read_text().replace("good.png", "gone.png"))
    write_voc(src, "broken.jpg", [("with_mask", 10, 10, 40, 40)])
    (src / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    ds, counts, _ = _ingest(tmp_path, src)
    assert [i.path.name for i in ds.images] == ["good.png"]
    assert counts["missing_image"] == 1 and counts["corrupt_image"] == 1


def test_truncated_image_rejected(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "t.jpg", [("with_mask", 10, 10, 40, 40)], size=(200, 200))
    write_voc(src, "ok.jpg", [("with_mask", 10, 10, 40, 40)])
    data = (src / "images" / "t.jpg").read_bytes()
    (src / "images" / "t.jpg").write_bytes(data[: len(data) // 2])
    ds, counts, _ = _ingest(tmp_path, src)
    assert [i.path.name for i in ds.images] == ["ok.jpg"] and counts["corrupt_image"] == 1


def test_grayscale_and_rgba_converted_to_rgb(tmp_path):
    from PIL import Image

    src = tmp_path / "src"
    write_voc(src, "gray.png", [("with_mask", 10, 10, 40, 40)], mode="L")
    write_voc(src, "alpha.png", [("without_mask", 10, 10, 40, 40)], mode="RGBA")
    ds, counts, _ = _ingest(tmp_path, src)
    assert counts["grayscale_image"] == 1 and counts["rgba_image"] == 1
    for img in ds.images:
        with Image.open(img.path) as im:
            assert im.mode == "RGB"
        assert img.boxes


def test_exif_rotated_image_boxes_in_stored_pixels(tmp_path):
    """labelImg-style: annotation size = stored size -> keep stored pixels, drop the tag."""
    from PIL import Image

    src = tmp_path / "src"
    write_voc(src, "r.jpg", [("with_mask", 10, 10, 60, 30)], size=(100, 40), exif_orientation=6)
    ds, counts, _ = _ingest(tmp_path, src)
    img = ds.images[0]
    assert (img.width, img.height) == (100, 40) and counts["exif_orientation_stripped"] == 1
    with Image.open(img.path) as im:
        assert im.size == (100, 40) and im.getexif().get(0x0112, 1) == 1
    assert boxes_of(ds, "r") == [("with_mask", 10, 10, 60, 30, False)]


def test_exif_rotated_image_boxes_on_rotated_view(tmp_path):
    """Annotation size = rotated size -> the pixels are rotated to match the boxes."""
    from PIL import Image

    src = tmp_path / "src"
    write_voc(src, "r.jpg", [("with_mask", 5, 50, 35, 90)], size=(40, 100), image_size=(100, 40), exif_orientation=6)
    ds, counts, _ = _ingest(tmp_path, src)
    img = ds.images[0]
    assert (img.width, img.height) == (40, 100) and counts["exif_orientation_applied"] == 1
    with Image.open(img.path) as im:
        assert im.size == (40, 100) and im.getexif().get(0x0112, 1) == 1
    assert boxes_of(ds, "r") == [("with_mask", 5, 50, 35, 90, False)]


def test_float_coordinates_kept_and_reported(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "f.png", [("with_mask", "10.5", "12.25", "40.75", "50.0")])
    ds, counts, _ = _ingest(tmp_path, src)
    assert boxes_of(ds, "f") == [("with_mask", 10.5, 12.25, 40.75, 50.0, False)]
    assert counts["float_coordinates"] == 1


def test_difficult_flag_kept_through_dataset_json(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "d.png", [("with_mask", 10, 10, 40, 40, 1), ("with_mask", 50, 10, 80, 40, 0)])
    ds_json, _ = ingest([src], tmp_path / "out")
    anns = json.loads(ds_json.read_text())["annotations"]
    assert sorted(a["difficult"] for a in anns) == [0, 1]
    assert boxes_of(load_dataset(ds_json), "d")[0][-1] is True


def test_duplicate_images_merged_and_duplicate_boxes_dropped(tmp_path):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    write_voc(a, "same.png", [("with_mask", 10, 10, 40, 40)])
    write_voc(b, "copy.png", [("with_mask", 10, 10, 40, 41), ("without_mask", 50, 10, 80, 40)])
    shutil.copyfile(a / "images" / "same.png", b / "images" / "copy.png")  # identical bytes, other name
    ds_json, report = ingest([a, b], tmp_path / "out")
    ds = load_dataset(ds_json)
    assert len(ds.images) == 1
    assert boxes_of(ds, "same") == [("with_mask", 10, 10, 40, 40, False), ("without_mask", 50, 10, 80, 40, False)]
    assert report.counts()["duplicate_image"] == 1 and report.counts()["duplicate_box"] == 1


def test_same_file_name_different_content_both_kept(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_voc(a, "x.png", [("with_mask", 10, 10, 40, 40)])
    write_voc(b, "x.png", [("without_mask", 10, 10, 40, 40)], size=(90, 70))
    ds = load_dataset(ingest([a, b], tmp_path / "out")[0])
    assert len(ds.images) == 2 and len({i.path for i in ds.images}) == 2


def test_bad_annotation_files_reported(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "ok.png", [("with_mask", 10, 10, 40, 40)])
    (src / "annotations" / "bad.xml").write_text("<annotation><filename>ok.png</filename><object><name>mask")
    yolo = tmp_path / "yolo"
    make_image(yolo / "y.jpg")
    (yolo / "classes.txt").write_text("mask\n")
    (yolo / "y.txt").write_text("0 0.5 0.5 0.2\n0 0.5 0.5 0.2 0.2\n7 0.1 0.1 0.1 0.1\n")
    ds_json, report = ingest([src, yolo], tmp_path / "out")
    counts = report.counts()
    assert counts["bad_annotation"] == 1 and counts["bad_box"] == 1 and counts["unknown_class"] == 1
    assert load_dataset(ds_json).box_counts()["with_mask"] == 2


def test_nothing_usable_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HackathonError) as exc:
        ingest([tmp_path / "empty", tmp_path / "nope"], tmp_path / "out")
    assert "No usable images" in exc.value.message and exc.value.fix


def test_sources_are_never_modified(tmp_path, mixed_sources):
    before = {p: p.read_bytes() for s in mixed_sources.values() for p in s.rglob("*") if p.is_file()}
    ingest(list(mixed_sources.values()), tmp_path / "out")
    after = {p: p.read_bytes() for s in mixed_sources.values() for p in s.rglob("*") if p.is_file()}
    assert before == after


def test_output_inside_source_or_foreign_dataset_json_refused(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "a.png", [("with_mask", 10, 10, 40, 40)])
    with pytest.raises(HackathonError, match="inside the source"):
        ingest([src], src / "out")
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "dataset.json").write_text('{"images": []}')
    with pytest.raises(HackathonError, match="not overwriting"):
        ingest([src], foreign)
    assert (foreign / "dataset.json").read_text() == '{"images": []}'


def test_reingest_into_same_out_reuses_files_and_keeps_foreign_ones(tmp_path):
    src = tmp_path / "src"
    write_voc(src, "a.png", [("with_mask", 10, 10, 40, 40)])
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a.png").write_bytes(b"somebody else's file")
    first = load_dataset(ingest([src], out)[0]).images[0].path
    assert first.name != "a.png" and (out / "images" / "a.png").read_bytes() == b"somebody else's file"
    second = load_dataset(ingest([src], out)[0]).images[0].path
    assert second == first and len(list((out / "images").iterdir())) == 2
