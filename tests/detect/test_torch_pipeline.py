"""`hackathon run detect backend=torch` end to end on a tiny demo: a few real SSDlite training steps,
inference, pycocotools scoring; a rerun skips every stage; an interrupted training resumes from last.pt.
Run under `flock /tmp/hackathon-train.lock` (it trains)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hackathon.core.errors import HackathonError

TINY = ["demo.num_images=24", "torch.epochs=1", "torch.batch_size=8", "torch.max_train_minutes=0", "torch.input_size=128",
        "torch.warmup_steps=2", "export.width=96", "export.height=96", "eval.samples=2"]


def metrics_after(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HACKATHON_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HACKATHON_DEMO_DATA", str(tmp_path / "demo"))
    return tmp_path


@pytest.mark.slow
def test_run_detect_torch_tiny_end_to_end_and_resume(isolated):
    from hackathon.core.runner import run_task

    logs = []
    ctx = run_task("detect", TINY, echo=logs.append)
    rd = ctx.run_dir
    metrics = json.loads((rd / "metrics.json").read_text())
    for key in ("map", "map50", "ap50_per_class", "voc_ap50"):
        assert key in metrics
    assert 0.0 <= metrics["map50"] <= 1.0 and set(metrics["ap50_per_class"]) == {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert metrics["train_cut_by_time"] is False  # epochs, not the wall-clock safety cap, ended training
    assert (rd / "checkpoints" / "last.pt").exists() and (rd / "predictions" / "test.json").exists()
    assert (rd / "eval" / "pr_curves.png").exists() and (rd / "export" / "kitti" / "train" / "kitti_index.json").exists()
    assets = json.loads((rd / "report_assets.json").read_text())
    assert any(a["path"].startswith("eval/") for a in assets["images"])
    rows = (rd / "logs" / "torch_train" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss") and len(rows) == 2
    meta = json.loads((rd / "meta.json").read_text())
    assert meta["stages"]["train"]["model"] == "ssdlite320_mobilenet_v3_large"
    assert meta["stages"]["train"]["batch_size"] == 8  # recorded by the OOM back-off wrapper

    # the detector's ONNX: checked against torchvision, recorded, and the predictor `serve` runs agrees
    check = json.loads((rd / "export" / "export_check.json").read_text())
    assert check["passed"] and check["n_inputs"] >= 1 and check["max_abs_diff"]["score"] <= 1e-3
    assert metrics_after(rd)["detect_export_box_agreement"] == 1.0
    assert any(t["title"].startswith("Export parity") for t in json.loads((rd / "report_assets.json").read_text())["tables"])
    from PIL import Image

    from tasks.detect.export_model import compare_image, torch_detections
    from tasks.detect.onnx_infer import load
    from tasks.detect.train_torch import load_trained

    predictor = load(rd)
    assert predictor.classes == ["with_mask", "without_mask", "mask_weared_incorrect"]
    model, _, _ = load_trained(rd / "checkpoints")
    model.eval().score_thresh = predictor.info["score_floor"]
    image = Image.open(sorted((rd / "data" / "images").iterdir())[-1])  # an original image, not the checked ones
    boxes, scores, labels = predictor.detect(image, score_threshold=0.05)
    ref = torch_detections(model, np.asarray(image.convert("RGB")))
    got = {"boxes": boxes, "scores": scores, "labels": np.array([predictor.classes.index(n) + 1 for n in labels])}
    same = compare_image(ref, got, min_score=0.05, min_iou=0.9)
    assert same["matched"] == same["torch_detections"] == same["onnx_detections"], same
    assert boxes.dtype == np.float32 and boxes.shape == (len(scores), 4) and all(np.diff(scores) <= 0)
    assert (boxes[:, 2] <= image.width + 1e-3).all() and (boxes[:, 3] <= image.height + 1e-3).all()  # original pixels

    # same command again: everything is done, nothing re-runs
    logs.clear()
    run_task("detect", TINY, echo=logs.append)
    assert sum(line.startswith("skip ") for line in logs) == 8

    # a training killed after its first epoch resumes from last.pt instead of starting over
    meta["stages"]["train"]["status"] = "interrupted"
    (rd / "meta.json").write_text(json.dumps(meta))
    (rd / "stages" / "train.done").unlink()
    logs.clear()
    ctx = run_task("detect", TINY, run_dir=rd, echo=logs.append)
    train_meta = json.loads((rd / "meta.json").read_text())["stages"]["train"]
    assert train_meta["resumed_from"].endswith("last.pt") and train_meta["resumed_epoch"] == 1
    assert len((rd / "logs" / "torch_train" / "metrics.csv").read_text().splitlines()) == 2  # no epoch re-trained


def test_unknown_backend_and_missing_source_are_clear(isolated):
    from hackathon.core.runner import run_task

    with pytest.raises(HackathonError, match="backend"):
        run_task("detect", ["backend=onnx"], echo=lambda *_: None)
    with pytest.raises(HackathonError, match="does not exist"):
        run_task("detect", [f"data.source={isolated / 'nope'}"], echo=lambda *_: None)


def test_local_weights_file_must_exist(tmp_path):
    from tasks.detect.train_torch import build_model

    with pytest.raises(HackathonError, match="does not exist"):
        build_model("ssdlite320_mobilenet_v3_large", 3, str(tmp_path / "missing.pth"))


def test_local_weights_file_is_loaded(tmp_path):
    import torch

    from tasks.detect.train_torch import build_model

    src = build_model("ssdlite320_mobilenet_v3_large", 3)
    torch.save({"model": src.state_dict()}, tmp_path / "w.pt")
    dst = build_model("ssdlite320_mobilenet_v3_large", 3, str(tmp_path / "w.pt"))
    key = next(iter(src.state_dict()))
    assert torch.equal(src.state_dict()[key], dst.state_dict()[key])


def test_precise_bn_recalibration_sets_exact_statistics(tmp_path):
    """After recalibration the first BN's running mean is the average batch mean over the images
    (not the stale momentum average), and the momentum is restored for further training."""
    import torch

    from data_tools.detection.ingest import ingest
    from data_tools.detection.synth_masks import synth_masks
    from tasks.detect.train_torch import DetectionData, build_model, recalibrate_batchnorm

    ds_json, _ = ingest([synth_masks(tmp_path / "s", num_images=4, seed=1)], tmp_path / "d")
    data = DetectionData(ds_json)
    model = build_model("ssdlite320_mobilenet_v3_large", 3, input_size=64)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = model.backbone.features[0][0][0]  # the conv feeding that BN
    recalibrate_batchnorm(model, data, torch.device("cpu"), max_images=4, batch_size=4)
    with torch.no_grad():
        images, _ = model.transform([data.image(i).float().div(255) for i in range(4)])
        expected = conv(images.tensors).mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-4)
    assert bn.momentum == 0.03 and not model.training


def test_detector_predictor_without_export_says_how_to_make_it(tmp_path):
    from tasks.detect.onnx_infer import load

    with pytest.raises(HackathonError) as err:
        load(tmp_path)
    assert "detector.json" in err.value.message and "--only export_model" in err.value.fix


def test_tao_export_is_refused_by_onnxruntime_with_the_reason(tmp_path):
    from hackathon.core.atomic import atomic_write_json
    from tasks.detect.export_model import TAO_NOTE
    from tasks.detect.onnx_infer import load

    atomic_write_json(tmp_path / "export" / "detector.json", {"backend": "tao", "onnx": "detector.onnx",
                                                             "onnxruntime": False, "note": TAO_NOTE, "classes": []})
    with pytest.raises(HackathonError) as err:
        load(tmp_path)
    assert "TensorRT" in err.value.message and "triton-repo" in err.value.fix
