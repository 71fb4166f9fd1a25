"""Where the SSD's weights start (tasks/detect/pretrained.py): the packaged ImageNet MobileNetV2 lands in torch
hub's cache sha256-checked and its tensors are the backbone's, a broken file is refused, a hub name offline
gives the error with the cache path, and a COCO-style detector file starts all but the class layer."""

from __future__ import annotations

import json
import urllib.error

import pytest

from hackathon.core.errors import HackathonError
from tasks.detect import pretrained
from tasks.detect.pretrained import MNV2_MODEL, PACKAGED

FILE_NAME = "mobilenet_v2-b0353104.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and no network: a download fails as it does offline."""
    import torch

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_packaged_backbone_is_copied_checked_and_loaded(torch_home):
    import torch

    from tasks.detect.ssd import build_model

    records = {}
    model = build_model(MNV2_MODEL, 3, backbone="packaged:mobilenet_v2", records=records)
    cached = torch_home / FILE_NAME
    assert cached.is_file()  # where torchvision's MobileNet_V2_Weights looks: it loads with no network
    source = torch.load(cached, map_location="cpu", weights_only=True)
    ours = [v for k, v in model.state_dict().items() if k.startswith("backbone.features.")]
    theirs = [v for k, v in source.items() if k.startswith("features.")]
    assert len(ours) == len(theirs) == 312 and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    rec = records["backbone"]
    assert rec["kind"] == "packaged" and rec["sha256"] == PACKAGED["mobilenet_v2"]["sha256"] and rec["loaded"] == 312
    assert any(p.startswith("head.classification_head") for p in rec["new"]) and records["detector"]["kind"] == "scratch"
    assert model.head.classification_head.num_columns == 4  # 3 classes + background


def test_broken_packaged_file_is_refused_and_nothing_is_cached(torch_home, tmp_path, monkeypatch):
    fake = tmp_path / "site" / "fake_weights_pkg"
    (fake / "weights").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "weights" / FILE_NAME).write_bytes(b"truncated")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(PACKAGED, "mobilenet_v2", {**PACKAGED["mobilenet_v2"], "package": "fake_weights_pkg"})
    with pytest.raises(HackathonError) as err:
        pretrained.packaged_file("packaged:mobilenet_v2")
    assert "sha256" in err.value.message and "nothing was copied" in err.value.message
    assert "--force-reinstall" in err.value.fix and not list(torch_home.glob("*"))
    # a broken file already in the cache: named, and left for the user to delete
    torch_home.mkdir(parents=True, exist_ok=True)
    (torch_home / FILE_NAME).write_bytes(b"broken download")
    with pytest.raises(HackathonError, match="sha256") as err:
        pretrained.packaged_file("packaged:mobilenet_v2")
    assert str(torch_home / FILE_NAME) in err.value.message and (torch_home / FILE_NAME).read_bytes() == b"broken download"


def test_hub_name_offline_names_the_model_the_cache_path_and_scratch(torch_home):
    from tasks.detect.ssd import build_model

    with pytest.raises(HackathonError) as err:
        build_model(MNV2_MODEL, 3, backbone="MobileNet_V2_Weights.IMAGENET1K_V1")
    assert "MobileNetV2 backbone" in err.value.message and "MobileNet_V2_Weights.IMAGENET1K_V1" in err.value.message
    assert str(torch_home / FILE_NAME) in err.value.fix and "model.backbone=scratch" in err.value.fix
    with pytest.raises(HackathonError, match="not torchvision weights that fit"):
        pretrained.implied_model("ResNet50_Weights.IMAGENET1K_V2", "scratch")


def test_coco_detector_file_starts_all_but_the_class_layer(tmp_path, monkeypatch):
    """A whole 91-class detector (COCO's layout) as model.init: every tensor but the class layer is loaded,
    the class layer is re-made for our 3 classes, and meta.json / metrics.json say so."""
    import torch
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from hackathon.core.runner import run_task

    coco = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    torch.save(coco.state_dict(), tmp_path / "coco.pth")
    monkeypatch.setenv("HACKATHON_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HACKATHON_DEMO_DATA", str(tmp_path / "demo"))
    overrides = ["demo.num_images=16", "trainer.max_epochs=1", "trainer.batch_size=8", "model.input_size=96",
                 "trainer.warmup_steps=1", "export.width=64", "export.height=64",
                 "trainer.bn_recalibration_images=8", f"model.init={tmp_path / 'coco.pth'}", "model.backbone=packaged:mobilenet_v2"]
    rd = tmp_path / "run"
    with pytest.raises(HackathonError, match="tensors of"):  # the packaged backbone's model: the file does not fit
        run_task("detect", overrides, run_dir=tmp_path / "wrong", echo=lambda *_: None)
    run_task("detect", [*overrides[:-1], "model.backbone=scratch"], run_dir=rd, echo=lambda *_: None)
    train = json.loads((rd / "meta.json").read_text())["stages"]["train"]
    rec = train["init"]["detector"]
    n_tensors = len(coco.state_dict())
    assert train["model"] == "ssdlite320_mobilenet_v3_large" and rec["kind"] == "file"
    assert rec["loaded"] == n_tensors - 12  # 6 class-layer convs x (weight, bias) had 91 classes
    assert rec["new"] == [f"head.classification_head.module_list.{i}.1" for i in range(6)]
    assert json.loads((rd / "metrics.json").read_text())["init"]["detector"] == rec
