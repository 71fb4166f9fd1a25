"""Generated TAO specs: every block the issue lists, TAO's field names, the three class mappings,
quoting/escaping that round-trips through protobuf's own tokenizer, and overrides that refuse typos."""

from __future__ import annotations

import re

import pytest

from hackathon.core.errors import HackathonError
from tasks.detect import tao_spec
from tasks.detect.prototext import as_dict as parse, one

CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")


def _filled(network: str, **over) -> dict:
    return _filled_from(tao_spec.experiment_spec(network, over.pop("overrides", None), classes=CLASSES))


def _filled_from(spec: dict) -> dict:
    network = "yolo_v3" if "yolov3_config" in spec else "ssd"
    spec["dataset_config"]["data_sources"] = [{"tfrecords_path": "/w/tfrecords/train*", "image_directory_path": "/w/kitti/train"}]
    spec["dataset_config"]["validation_data_sources"] = [{"label_directory_path": "/w/kitti/val/labels",
                                                          "image_directory_path": "/w/kitti/val/images"}]
    spec["training_config"]["pretrain_model_path"] = "/w/pretrained/resnet_18.hdf5"
    spec["augmentation_config"].update({"output_width": 320, "output_height": 320})
    if network == "yolo_v3":
        spec["yolov3_config"].update({"big_anchor_shape": "[(90.00, 80.00), (120.00, 110.00), (200.00, 190.00)]",
                                      "mid_anchor_shape": "[(40.00, 38.00), (50.00, 48.00), (70.00, 66.00)]",
                                      "small_anchor_shape": "[(10.00, 9.00), (18.00, 17.00), (28.00, 26.00)]"})
    return spec


COMMON_FIELDS = [
    "training_config.batch_size_per_gpu", "training_config.num_epochs", "training_config.checkpoint_interval",
    "training_config.learning_rate.soft_start_annealing_schedule.min_learning_rate",
    "training_config.learning_rate.soft_start_annealing_schedule.max_learning_rate",
    "training_config.learning_rate.soft_start_annealing_schedule.soft_start",
    "training_config.learning_rate.soft_start_annealing_schedule.annealing",
    "training_config.regularizer.type", "training_config.regularizer.weight", "training_config.pretrain_model_path",
    "eval_config.average_precision_mode", "eval_config.matching_iou_threshold", "eval_config.batch_size",
    "nms_config.confidence_threshold", "nms_config.clustering_iou_threshold", "nms_config.top_k",
    "augmentation_config.output_width", "augmentation_config.output_height", "augmentation_config.output_channel",
    "dataset_config.data_sources.tfrecords_path", "dataset_config.data_sources.image_directory_path",
    "dataset_config.validation_data_sources.label_directory_path",
    "dataset_config.validation_data_sources.image_directory_path",
]


def _class_map(parsed_dataset_config: dict) -> dict:
    return {e["key"][0]: e["value"][0] for e in parsed_dataset_config["target_class_mapping"]}


@pytest.mark.parametrize("network,block,extra", [
    ("ssd", "ssd_config", ["ssd_config.arch", "ssd_config.nlayers", "ssd_config.aspect_ratios_global",
                           "ssd_config.scales", "training_config.optimizer.sgd.momentum"]),
    ("yolo_v3", "yolov3_config", ["yolov3_config.arch", "yolov3_config.nlayers", "yolov3_config.big_anchor_shape",
                                  "yolov3_config.mid_anchor_shape", "yolov3_config.small_anchor_shape",
                                  "training_config.optimizer.adam.epsilon"]),
])
def test_experiment_spec_has_every_block_and_field(network, block, extra):
    text, _ = tao_spec.render(_filled(network))
    parsed = parse(text)
    for top in (block, "training_config", "eval_config", "nms_config", "augmentation_config", "dataset_config"):
        assert top in parsed, f"{network}: block {top} missing"
    for dotted in COMMON_FIELDS + extra:
        one(parsed, dotted)  # present exactly once
    assert one(parsed, f"{block}.arch") == "resnet"
    assert _class_map(parsed["dataset_config"][0]) == {c: c for c in CLASSES}
    # enums are bare identifiers, strings are quoted
    assert re.search(r"^\s*type: L1$", text, re.M) and re.search(r"^\s*average_precision_mode: SAMPLE$", text, re.M)
    assert re.search(r'^\s*arch: "resnet"$', text, re.M)
    other = "yolov3_config" if network == "ssd" else "ssd_config"
    assert other not in parsed


def test_yolo_anchor_strings_survive_rendering():
    parsed = parse(tao_spec.render(_filled("yolo_v3"))[0])
    assert one(parsed, "yolov3_config.small_anchor_shape") == "[(10.00, 9.00), (18.00, 17.00), (28.00, 26.00)]"


def test_dataset_convert_spec():
    spec = tao_spec.convert_spec(classes=CLASSES)
    spec["kitti_config"]["root_directory_path"] = "/w/kitti/train"
    spec["image_directory_path"] = "/w/kitti/train"
    parsed = parse(tao_spec.render(spec)[0])
    for f in ("root_directory_path", "image_dir_name", "label_dir_name", "image_extension", "partition_mode",
              "num_partitions", "val_split", "num_shards"):
        one(parsed, f"kitti_config.{f}")
    assert one(parsed, "kitti_config.image_dir_name") == "images"
    assert _class_map(parsed) == {c: c for c in CLASSES}


@pytest.mark.parametrize("value", ['plain', 'with "quotes"', "back\\slash", "new\nline\ttab", "é 口罩", "'single'"])
def test_strings_are_quoted_and_escaped_round_trip(value):
    parsed = parse(tao_spec.render({"a": {"path": value}})[0])
    assert one(parsed, "a.path") == value


def test_path_fields_report_their_line():
    text, fields = tao_spec.render(_filled("ssd"))
    lines = text.splitlines()
    assert fields, "path fields must be reported"
    for f in fields:
        assert f.value in lines[f.line - 1] and f.field.split(".")[-1].split("[")[0] in lines[f.line - 1]
    assert any(f.field == "dataset_config.data_sources[0].tfrecords_path" for f in fields)


def test_overrides_merge_and_refuse_typos():
    spec = tao_spec.experiment_spec("ssd", ["training_config.num_epochs=3", "ssd_config.nlayers=34",
                                            "ssd_config.freeze_blocks=[0, 1]", '+ssd_config.steps="[8, 16]"'])
    assert spec["training_config"]["num_epochs"] == 3 and spec["ssd_config"]["nlayers"] == 34
    text = tao_spec.check(spec, "ssd")[0]
    assert "freeze_blocks: 0\n  freeze_blocks: 1" in text  # a list becomes a repeated field
    assert 'steps: "[8, 16]"' in text  # SSDConfig.steps is one string
    nested = tao_spec.experiment_spec("yolo_v3", {"training_config": {"num_epochs": 5}})
    assert nested["training_config"]["num_epochs"] == 5
    with pytest.raises(HackathonError) as exc:
        tao_spec.experiment_spec("ssd", ["training_config.num_epoch=3"])
    assert "Did you mean `num_epochs`?" in exc.value.fix and "batch_size_per_gpu" in exc.value.message
    with pytest.raises(HackathonError) as exc:  # a field of another block: where it belongs
        tao_spec.experiment_spec("yolo_v3", ["training_config.nlayers=34"])
    assert "Override yolov3_config.nlayers instead." == exc.value.fix
    # a field TAO knows but the template leaves out needs no `+` any more
    spec = tao_spec.experiment_spec("yolo_v3", ["eval_config.visualize_pr_curve=true"])
    assert "visualize_pr_curve: true" in tao_spec.check(_filled_from(spec), "yolo_v3")[0]
    with pytest.raises(HackathonError):
        tao_spec.experiment_spec("retinanet")


def test_bad_enum_and_double_load_model_are_refused():
    spec = _filled("ssd")
    spec["training_config"]["regularizer"]["type"] = "L3"
    with pytest.raises(HackathonError, match="L3"):
        tao_spec.check(spec, "ssd")
    spec = _filled("ssd")
    spec["training_config"]["resume_model_path"] = "/w/r.hdf5"
    with pytest.raises(HackathonError, match="oneof"):
        tao_spec.check(spec, "ssd")


def test_missing_required_fields_are_listed():
    spec = tao_spec.experiment_spec("yolo_v3")
    missing = tao_spec.missing_required(spec, "yolo_v3")
    assert "yolov3_config.big_anchor_shape" in missing and "dataset_config.data_sources[0]" in missing
    assert tao_spec.missing_required(_filled("yolo_v3"), "yolo_v3") == []


def test_every_template_field_is_commented():
    for path in tao_spec.TEMPLATES_DIR.glob("*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^\s*(- )?[A-Za-z_][\w]*:", line):
                above = lines[i - 1].strip() if i else ""
                assert "#" in line or above.startswith("#"), f"{path.name}:{i + 1} has no comment: {line}"


def test_tao_evaluate_map_is_read_from_its_log(tmp_path):
    from tasks.detect.tao_pipeline import parse_tao_map

    log = tmp_path / "e.log"
    log.write_text("Start to calculate AP for each class\n*******************************\n"
                   "with_mask     AP    0.912\nwithout_mask  AP    0.801\n              mAP   0.8565\n"
                   "*******************************\n")
    assert parse_tao_map(log) == 0.8565
    log.write_text("Stand-in evaluate: no AP is computed.\n")
    assert parse_tao_map(log) is None
