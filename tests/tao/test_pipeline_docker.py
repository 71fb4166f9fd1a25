"""`hackathon run detect backend=tao ...` end to end through the engine with the stand-in image:
every stage runs in a container, metrics.json comes from the stand-in's inference output, training
resumes from the newest checkpoint, and a FAILURE status fails the stage."""

from __future__ import annotations

import json
import os

import pytest

from hackathon.core.errors import HackathonError
from hackathon.core.runner import run_task
from tasks.detect.tao_schema import check_text

pytestmark = pytest.mark.docker
TAO_STAGES = ("tao_convert", "tao_train", "tao_evaluate", "tao_inference", "tao_score", "tao_export", "export_model",
              "tao_engine")


def _overrides(image: str, network: str, *extra: str) -> list[str]:
    return ["backend=tao", f"network={network}", f"image={image}", "gpus=none", "demo.num_images=40",
            "tao.shm_size=64m", *extra]


@pytest.mark.parametrize("network", ["ssd", "yolo_v3"])
def test_run_detect_backend_tao_end_to_end(tmp_path, standin_image, network):
    ctx = run_task("detect", _overrides(standin_image, network), run_dir=tmp_path / "run", echo=lambda *_: None)
    run = ctx.run_dir
    meta = json.loads((run / "meta.json").read_text())
    assert all(meta["stages"][s]["status"] == "done" for s in TAO_STAGES)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.3 < metrics["map50"] <= 1.0 and metrics["num_detections"] > 0
    # the score came from the stand-in's KITTI inference output, read back through the mounts
    labels = sorted((run / "tao" / "results" / "inference" / "labels").glob("*.txt"))
    assert labels and len(labels[0].read_text().split("\n")[0].split()) == 16
    spec = (run / "tao" / "specs" / "experiment.txt").read_text()
    assert ("yolov3_config {" if network == "yolo_v3" else "ssd_config {") in spec
    assert check_text(spec, network) == [] and check_text((run / "tao" / "specs" / "convert.txt").read_text(),
                                                          "dataset_convert") == []
    # ssd dataset_convert writes only STARTED (as TAO 5 does), yolo_v3's wrapper adds SUCCESS: both are done
    convert_statuses = [json.loads(line)["status"] for line in
                        (run / "tao" / "results" / "convert" / "status.json").read_text().splitlines()]
    assert convert_statuses == (["STARTED"] if network == "ssd" else ["STARTED", "SUCCESS"])
    assert '/workspace/tao-experiments/export/kitti/val/labels' in spec
    if network == "yolo_v3":
        assert "big_anchor_shape: \"[(" in spec and meta["stages"]["tao_train"]["anchors_mean_iou"] > 0.5
    commands = (run / "tao" / "launcher_commands.sh").read_text()
    for task in ("dataset_convert", "train", "evaluate", "inference", "export"):
        assert f"tao model {network} {task} " in commands
    mounts = json.loads((run / "tao" / "mounts.json").read_text())
    assert mounts["Mounts"][0] == {"source": str(run), "destination": "/workspace/tao-experiments"}
    for p in (run / "tao" / "results").rglob("*"):
        assert p.stat().st_uid == os.getuid(), f"{p} is not owned by the invoking user"
    onnx = list((run / "tao" / "results" / "export").glob("*.onnx"))
    assert onnx and meta["stages"]["tao_engine"]["skipped"]
    assets = json.loads((run / "report_assets.json").read_text())
    assert any(t["title"].endswith("launcher equivalent") for t in assets["tables"])


@pytest.mark.parametrize("network", ["ssd", "yolo_v3"])
def test_training_resumes_from_the_newest_checkpoint(tmp_path, standin_image, network):
    over = _overrides(standin_image, network, "tao.experiment.training_config.num_epochs=3")
    ctx = run_task("detect", over, run_dir=tmp_path / "run", echo=lambda *_: None)
    weights = ctx.run_dir / "tao" / "results" / "train" / "weights"
    # as the runner leaves it when training is killed after epoch 1
    for f in weights.glob("*_epoch_00[23].hdf5"):
        f.unlink()
    meta_file = ctx.run_dir / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["stages"]["tao_train"]["status"] = "interrupted"
    meta_file.write_text(json.dumps(meta))
    (ctx.run_dir / "stages" / "tao_train.done").unlink()
    ctx = run_task("detect", over, run_dir=ctx.run_dir, echo=lambda *_: None)
    meta = json.loads(meta_file.read_text())
    assert meta["stages"]["tao_train"]["resumed_epoch"] == 1
    log = (ctx.run_dir / "logs" / "tao_train.log").read_text()
    if network == "ssd":
        assert "--initial_epoch 2" in log
    else:
        assert 'resume_model_path: "/workspace/tao-experiments/tao/results/train/weights/yolov3_resnet18_epoch_001.hdf5"' \
            in (ctx.run_dir / "tao" / "specs" / "train.txt").read_text()
    assert "Resuming from" in log and "Epoch 1/3" not in log.split("Resuming from")[-1]
    assert sorted(p.name[-7:-5] for p in weights.glob("*.hdf5")) == ["01", "02", "03"]
    assert meta["stages"]["tao_score"]["status"] == "done"


def test_config_change_trains_from_scratch_and_keeps_the_old_results(tmp_path, standin_image):
    ctx = run_task("detect", _overrides(standin_image, "ssd"), run_dir=tmp_path / "run", echo=lambda *_: None)
    ctx = run_task("detect", _overrides(standin_image, "ssd", "tao.experiment.training_config.num_epochs=3"),
                   run_dir=ctx.run_dir, echo=lambda *_: None)
    results = ctx.run_dir / "tao" / "results"
    assert len(list(results.glob("train.replaced-*/weights/*.hdf5"))) == 2
    assert "Resuming" not in (ctx.run_dir / "logs" / "tao_train.log").read_text().split("=====")[-1]
    assert len(list((results / "train" / "weights").glob("*.hdf5"))) == 3


def test_status_failure_with_exit_zero_fails_the_stage(tmp_path, standin_image):
    over = _overrides(standin_image, "ssd", "+tao.envs.TAO_STANDIN_FAIL=inference:status")
    with pytest.raises(HackathonError, match="status FAILURE"):
        run_task("detect", over, run_dir=tmp_path / "run", echo=lambda *_: None)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["stages"]["tao_inference"]["status"] == "failed"
    assert "tao_score" not in meta["stages"] or meta["stages"]["tao_score"].get("status") != "done"


def test_pretrained_path_outside_the_mounts_is_refused_before_training(tmp_path, standin_image, docker_client):
    outside = tmp_path / "elsewhere" / "resnet_18.hdf5"
    outside.parent.mkdir()
    outside.write_text("weights")
    over = _overrides(standin_image, "ssd", f"+tao.experiment.training_config.pretrain_model_path={outside}")
    with pytest.raises(HackathonError) as exc:
        run_task("detect", over, run_dir=tmp_path / "run", echo=lambda *_: None)
    msg = exc.value.message
    assert "train.txt line" in msg and "training_config.pretrain_model_path" in msg and str(outside) in msg
    assert "mount" in exc.value.fix
    assert not (tmp_path / "run" / "tao" / "results" / "train").exists()  # no container started for train
