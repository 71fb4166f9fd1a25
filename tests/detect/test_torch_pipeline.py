"""`hackathon run detect backend=torch` end to end on a tiny demo: real SSDlite training on the one engine
(kill -9 after the first epoch's last.ckpt, the same command resumes from it), inference, pycocotools
scoring, the ONNX export; a rerun skips every stage. Run under `flock /tmp/hackathon-train.lock` (it trains)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hackathon.core.errors import HackathonError

TINY = ["demo.num_images=24", "trainer.max_epochs=1", "trainer.batch_size=8", "trainer.max_time=null",
        "model.input_size=128", "trainer.warmup_steps=2", "export.width=96", "export.height=96", "eval.samples=2"]
EPOCHS = 3  # the kill -9 test: killed after epoch 1, the rerun trains epochs 2 and 3


def metrics_after(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HACKATHON_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HACKATHON_DEMO_DATA", str(tmp_path / "demo"))
    return tmp_path


def hackathon_run(run_dir: Path, overrides: list[str], log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "hackathon"
    return subprocess.Popen([str(exe), "run", "detect", "--run-dir", str(run_dir), *overrides], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())


@pytest.mark.slow
def test_run_detect_torch_tiny_kill_9_resume_end_to_end(isolated):
    from hackathon.core.runner import run_task

    overrides = [o for o in TINY if not o.startswith("trainer.max_epochs")] + [f"trainer.max_epochs={EPOCHS}"]
    rd, log = isolated / "run", isolated / "run.log"
    last = rd / "checkpoints" / "ssd" / "last.ckpt"
    proc = hackathon_run(rd, overrides, log)
    deadline = time.time() + 600
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert last.exists(), log.read_text(errors="replace")[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 mid-training: no clean-up runs
    proc.wait()
    assert json.loads((rd / "meta.json").read_text())["stages"]["train"]["status"] == "running"

    # the same command again: the engine resumes from last.ckpt and trains the remaining epochs only
    assert hackathon_run(rd, overrides, log).wait(timeout=900) == 0, log.read_text(errors="replace")[-3000:]
    meta = json.loads((rd / "meta.json").read_text())
    train = meta["stages"]["train"]
    assert train["status"] == "done" and train["resumed_from"]["checkpoint"].endswith("checkpoints/ssd/last.ckpt")
    assert 1 <= train["resumed_from"]["epochs_done"] < EPOCHS and train["epochs"] == EPOCHS
    assert [a["resumed_from"]["epochs_done"] for a in train["fit_attempts"]] == [train["resumed_from"]["epochs_done"]]
    assert train["model"] == "ssdlite320_mobilenet_v2" and train["batch_size"] == 8  # the OOM back-off's record
    assert train["init"]["backbone"]["kind"] == "packaged" and train["init"]["backbone"]["loaded"] == 312  # the demo's start
    assert train["init"]["detector"]["kind"] == "scratch" and metrics_after(rd)["init"] == train["init"]
    assert sorted(p.name for p in last.parent.glob("*.ckpt"))[0].startswith("best-epoch")  # last + one best
    assert len(list(last.parent.glob("*.ckpt"))) == 2
    metrics = metrics_after(rd)
    for key in ("map", "map50", "ap50_per_class", "voc_ap50", "best_val_fitness"):
        assert key in metrics
    assert 0.0 <= metrics["map50"] <= 1.0 and set(metrics["ap50_per_class"]) == {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert metrics["train_cut_by_time"] is False  # epochs, not the wall-clock safety cap, ended training
    assert (rd / "predictions" / "test.json").exists() and (rd / "eval" / "pr_curves.png").exists()
    assert (rd / "export" / "kitti" / "train" / "kitti_index.json").exists()
    assets = json.loads((rd / "report_assets.json").read_text())
    assert any(a["path"].startswith("eval/") for a in assets["images"])
    # Lightning's CSV of the second start (logs/ssd/attempt-2): a validation for each epoch not done before the kill
    header, *rows = [r.split(",") for r in (rd / "logs" / "ssd" / "attempt-2" / "metrics.csv").read_text().splitlines()]
    validated = [int(r[header.index("epoch")]) for r in rows if r[header.index("val_map50")]]
    assert validated == list(range(train["resumed_from"]["epochs_done"], EPOCHS))

    # the detector's ONNX: checked against torchvision, recorded, and the predictor `serve` runs agrees
    check = json.loads((rd / "export" / "export_check.json").read_text())
    assert check["passed"] and check["n_inputs"] >= 1 and check["max_abs_diff"]["score"] <= 1e-3
    assert metrics["detect_export_box_agreement"] == 1.0
    assert any(t["title"].startswith("Export parity") for t in assets["tables"])
    from PIL import Image

    from tasks.detect.export_model import compare_image, torch_detections
    from tasks.detect.onnx_infer import load
    from tasks.detect.ssd import load_trained

    predictor = load(rd)
    assert predictor.classes == ["with_mask", "without_mask", "mask_weared_incorrect"]
    model, info, path = load_trained(rd / "checkpoints")
    assert path.name.startswith("best-") and predictor.info["checkpoint"] == str(path)
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
    logs = []
    run_task("detect", overrides, run_dir=rd, echo=logs.append)
    assert sum(line.startswith("skip ") for line in logs) == 8


def test_epoch_batches_come_from_seed_and_epoch_and_split_over_ranks():
    from tasks.detect.ssd import EpochBatches

    one = EpochBatches(21, 4, seed=0, hflip=0.5)
    again = EpochBatches(21, 4, seed=0, hflip=0.5)
    assert one.batches() == again.batches() and len(one) == 5  # 21 = 5 x 4 + 1: the 1-image batch is skipped
    one.set_epoch(1)
    assert one.batches() != again.batches() and len({i for b in one for i, _ in b}) == 20
    assert {f for b in one for _, f in b} == {True, False}
    ranks = [EpochBatches(21, 4, seed=0, hflip=0.5, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(1)
    assert [len(r) for r in ranks] == [2, 2] and ranks[0].steps_per_epoch() == 3  # 3rd global batch: shares 4 + 1
    assert not {i for b in ranks[0] for i, _ in b} & {i for b in ranks[1] for i, _ in b}
    assert [i for b0, b1 in zip(*ranks) for i, _ in b0 + b1] == [i for b in one for i, _ in b][:16]


def test_unknown_backend_and_missing_source_are_clear(isolated):
    from hackathon.core.runner import run_task

    with pytest.raises(HackathonError, match="backend"):
        run_task("detect", ["backend=onnx"], echo=lambda *_: None)
    with pytest.raises(HackathonError, match="does not exist"):
        run_task("detect", [f"data.source={isolated / 'nope'}"], echo=lambda *_: None)


def test_local_weights_file_must_exist(tmp_path):
    from tasks.detect.ssd import build_model

    with pytest.raises(HackathonError, match="no such file"):
        build_model("ssdlite320_mobilenet_v3_large", 3, str(tmp_path / "missing.pth"))


def test_local_weights_file_is_loaded(tmp_path):
    import torch

    from tasks.detect.ssd import build_model

    src = build_model("ssdlite320_mobilenet_v3_large", 3)
    key = next(iter(src.state_dict()))
    torch.save(src.state_dict(), tmp_path / "w.pth")  # a plain state dict
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "run.ckpt")  # ours
    for init in ("w.pth", "run.ckpt"):
        dst = build_model("ssdlite320_mobilenet_v3_large", 3, str(tmp_path / init))
        assert torch.equal(src.state_dict()[key], dst.state_dict()[key]), init
    assert not torch.equal(src.state_dict()[key], build_model("ssdlite320_mobilenet_v3_large", 3, "scratch").state_dict()[key])


def test_precise_bn_recalibration_sets_exact_statistics(tmp_path):
    """After recalibration the first BN's running mean is the average batch mean over the images
    (not the stale momentum average), and the momentum is restored for further training."""
    import torch

    from data_tools.detection.ingest import ingest
    from data_tools.detection.synth_masks import synth_masks
    from tasks.detect.ssd import DetectionData, build_model, recalibrate_batchnorm

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
