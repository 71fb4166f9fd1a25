"""Local backend: torchvision SSD trained on the balanced train split through the one engine
(hackathon.core.training.fit_resumable), then inference on the eval split.

- Model (`model:`): ssdlite320_mobilenet_v3_large on CPU, ssd300_vgg16 on GPU (model.name=auto), or
  ssdlite320_mobilenet_v2 (torchvision's SSDlite on its ImageNet MobileNetV2) when `model.backbone` is set.
  Weights start from `model.backbone` / `model.init` (tasks/detect/pretrained.py), provenance in meta.json.
- Training (`trainer:`): a LightningModule whose training_step is torchvision's detection loss; AdamW with
  linear warm-up + cosine decay per step; horizontal flips; the data order of every epoch comes from
  (seed, epoch) alone, and under DDP each rank takes its share of every global batch. After the training
  batches of an epoch BatchNorm statistics are recomputed (precise BN) before validation and the checkpoint.
  Validation = val mAP@.5 and mAP@[.5:.95] (pycocotools), logged as `val_map50` / `val_map`; the best checkpoint
  is chosen by `val_fitness` = 0.1 mAP@.5 + 0.9 mAP (ultralytics' fitness): mAP@.5 alone saturates at 1.0 on
  easy data and would keep the first epoch that reached it, before its boxes were tight.
- The engine gives the rest: checkpoints/ssd/last.ckpt + best-*.ckpt, resume after kill -9, CUDA OOM
  back-off, trainer.max_time (train_cut_by_time in metrics.json), DDP / torchrun, the progress bar and the
  Lightning CSV log (logs/ssd/attempt-N/metrics.csv, plotted in the report).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from hackathon.core.atomic import atomic_write_json
from hackathon.core.errors import HackathonError
from hackathon.core.progress import track
from hackathon.core.training import fit_resumable, trainer_settings, warmup_then_decay
from tasks.detect.pretrained import MNV2_MODEL, implied_model

CPU_MODEL = "ssdlite320_mobilenet_v3_large"
GPU_MODEL = "ssd300_vgg16"
MODELS = (CPU_MODEL, GPU_MODEL, MNV2_MODEL)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # what ImageNet backbones saw
FIT_NAME = "ssd"  # checkpoints/ssd/, logs/ssd/
MONITOR = "val_fitness"
VAL_SCORE_THRESHOLD = 0.01  # detections kept for the per-epoch val mAP (low: the whole PR curve)
# Keys of the detect `trainer:` section that this module reads itself (not lightning.pytorch.Trainer's).
OWN_TRAINER_KEYS = ("weight_decay", "warmup_steps", "hflip", "bn_recalibration_images")


# ----------------------------------------------------------------------------- setup

def on_gpu(trainer_cfg) -> bool:
    """Whether the trainer section's accelerator lands on a GPU here (the engine's own resolution)."""
    return trainer_settings(trainer_cfg)["accelerator"] != "cpu"


def model_name(cfg, gpu: bool) -> str:
    name, implied = str(cfg.model.name), implied_model(cfg.model.get("backbone"), cfg.model.init)
    if name == "auto":
        return implied or (GPU_MODEL if gpu else CPU_MODEL)
    if name not in MODELS:
        raise HackathonError(f"model.name={name!r} is not supported.", fix=f"Use auto or one of {', '.join(MODELS)}.")
    if implied and implied != name:
        raise HackathonError(f"model.name={name}: the weights of model.init / model.backbone fit {implied}.",
                             fix="Use model.name=auto, or model.init=scratch model.backbone=scratch")
    return name


def set_input_size(model, size: int | None) -> None:
    """Run the SSD at size x size instead of its native 320/300. SSD's default boxes are fractions of
    the image and feature-map sizes are read at run time, so only the resize step changes; a smaller
    size is what makes the CPU demo train in minutes (cost grows with size squared)."""
    if size:
        model.transform.fixed_size = (int(size), int(size))
        model.transform.min_size = (int(size),)
        model.transform.max_size = int(size)


def ssdlite_mobilenet_v2(num_classes: int, backbone_state: dict):
    """torchvision's SSDlite320 head and extra layers on MobileNetV2 (the SSDLite of the MobileNetV2 paper):
    C4 = the expansion layer of features[14], the first stride-32 block. (model, backbone tensors loaded)."""
    from functools import partial

    from torch import nn
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection import _utils, ssd, ssdlite
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    from hackathon.core.init_weights import load_matching

    net = mobilenet_v2()  # its BatchNorm as the ImageNet file was trained with
    loaded, _ = load_matching(net, {k: v for k, v in backbone_state.items() if k.startswith("features.")})
    net.features[14].block = net.features[14].conv  # the extractor reads MobileNetV3's name for it
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # torchvision's SSDlite settings
    extractor = ssdlite.SSDLiteFeatureExtractorMobileNet(net.features, 14, norm)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    head = ssdlite.SSDLiteHead(_utils.retrieve_out_channels(extractor, (320, 320)), anchors.num_anchors_per_location(),
                               num_classes, norm)
    model = ssd.SSD(extractor, anchors, (320, 320), num_classes, head=head, score_thresh=0.001, nms_thresh=0.55,
                    detections_per_img=300, topk_candidates=300, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return model, loaded


def build_model(name: str, num_classes: int, init: str | None = "scratch", input_size: int | None = None,
                backbone: str | None = "scratch", records: dict | None = None):
    """SSD with `num_classes` foreground classes (+ background), its weights from `init` (a whole detector)
    or else `backbone` (tasks/detect/pretrained.py). `records` gets the provenance of each ({"detector": ...})."""
    from torchvision.models import detection

    from hackathon.core.init_weights import kind_of, load_matching, record
    from tasks.detect.pretrained import load_state

    init = str(init or "scratch")
    use_backbone = kind_of(init) == "scratch" and kind_of(backbone) != "scratch"
    if use_backbone and name != MNV2_MODEL:
        raise HackathonError(f"model.backbone={backbone} fits {MNV2_MODEL}, not {name}.", fix="Use model.name=auto")
    found = {"detector": record("scratch")}
    if name == MNV2_MODEL:
        state, file = load_state(backbone, "model.backbone", "MobileNetV2 backbone") if use_backbone else ({}, None)
        model, loaded = ssdlite_mobilenet_v2(num_classes + 1, state)
        if use_backbone:
            new = [k.rsplit(".", 1)[0] for k in model.state_dict() if not k.startswith("backbone.features.")]
            found["backbone"] = record(backbone, file, loaded, new)
    else:
        model = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    set_input_size(model, input_size)
    if kind_of(init) != "scratch":
        state, file = load_state(init, "model.init", f"{name} detector")
        loaded, new = load_matching(model, state)
        if loaded < len(model.state_dict()) / 2:
            raise HackathonError(f"Only {loaded} of the {len(model.state_dict())} tensors of {name} fit {file}.",
                                 fix=f"Use weights of a {name}, or set model.name (and model.backbone=scratch "
                                     "for the CPU/GPU default models) to the file's model.")
        found["detector"] = record(init, file, loaded, new)
    if records is not None:
        records.update(found)
    return model


# ----------------------------------------------------------------------------- data

class DetectionData:
    """Images of a COCO dataset.json decoded once into uint8 tensors (the demo is small; real data on the
    workstation streams from disk through the same interface). `data[[(i, flip), ...]]` is a training batch."""

    def __init__(self, dataset_json: Path, cache: bool = True):
        from data_tools.detection.dataset import load_dataset

        self.ds = load_dataset(dataset_json)
        self.cache = cache
        self._tensors: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.ds.images)

    def __getitem__(self, batch: list[tuple[int, bool]]) -> list:
        return [self.training_item(i, flip) for i, flip in batch]

    def image(self, i: int):
        import numpy as np
        import torch
        from PIL import Image

        if i in self._tensors:
            return self._tensors[i]
        with Image.open(self.ds.images[i].path) as im:
            t = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
        if self.cache:
            self._tensors[i] = t
        return t

    def target(self, i: int):
        import torch

        img = self.ds.images[i]
        boxes = torch.tensor([[b.x1, b.y1, b.x2, b.y2] for b in img.boxes], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.ds.category_id(b.label) for b in img.boxes], dtype=torch.int64)
        return {"boxes": boxes, "labels": labels}

    def training_item(self, i: int, flip: bool):
        img, tgt = self.image(i).float().div(255), self.target(i)
        if flip:
            img = img.flip(-1)
            w = img.shape[-1]
            boxes = tgt["boxes"].clone()
            boxes[:, [0, 2]] = w - tgt["boxes"][:, [2, 0]]
            tgt = {**tgt, "boxes": boxes}
        return img, tgt


class EpochBatches:
    """The training batches of one epoch, a function of (seed, epoch) alone: shuffled with
    random.Random(f"{seed}-{epoch}"), each image flipped with probability `hflip` from the same generator.
    Under DDP rank r takes the r-th `batch_size` share of every global batch (Lightning's distributed
    sampler is off). Global batches with a share of fewer than 2 images are skipped by every rank:
    BatchNorm cannot train on one image (SSDlite's last maps are 1x1). Lightning calls set_epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, hflip: float, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.hflip, self.rank, self.world = n, batch_size, seed, hflip, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def steps_per_epoch(self) -> int:  # the schedule's unit (a skipped short batch included, as always)
        return max(1, math.ceil(self.n / (self.batch_size * self.world)))

    def batches(self) -> list[list[tuple[int, bool]]]:
        rng = random.Random(f"{self.seed}-{self.epoch}")
        order = list(range(self.n))
        rng.shuffle(order)
        flips = [rng.random() < self.hflip for _ in order]
        out, bs, step = [], self.batch_size, self.batch_size * self.world
        for start in range(0, self.n, step):
            shares = [list(range(start + r * bs, min(self.n, start + (r + 1) * bs))) for r in range(self.world)]
            if min(len(s) for s in shares) >= 2:
                out.append([(order[k], flips[k]) for k in shares[self.rank]])
        return out

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def _as_is(batch):
    return batch


# ----------------------------------------------------------------------------- inference

def detect_batch(model, data: DetectionData, idx: list[int], device) -> list[dict]:
    """COCO results of images `idx` of `data` (boxes in original pixels: SSD's transform maps them back)."""
    outputs = model([data.image(i).float().div(255).to(device) for i in idx])
    results = []
    for i, out in zip(idx, outputs):
        image_id = data.ds.images[i].id
        for box, label, score in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist()):
            x1, y1, x2, y2 = box
            results.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                            "bbox": [x1, y1, x2 - x1, y2 - y1]})
    return results


def predict(model, data: DetectionData, device, batch_size: int = 16, score_threshold: float = VAL_SCORE_THRESHOLD,
            progress: str | None = None) -> list[dict]:
    """COCO results for every image of `data`. `progress`: the description of a progress bar (None: no bar)."""
    import torch

    model.eval()
    model.score_thresh = score_threshold
    results = []
    starts = range(0, len(data), batch_size)
    with torch.inference_mode():
        for start in track(starts, progress, unit="batch") if progress else starts:
            results += detect_batch(model, data, list(range(start, min(len(data), start + batch_size))), device)
    return results


def recalibrate_batchnorm(model, data: DetectionData, device, max_images: int = 256, batch_size: int = 16) -> None:
    """Recompute every BatchNorm's running mean/var as the exact average over `max_images` training
    images with the current weights ("precise BN").

    Why: trained from scratch for a few hundred steps, the weights move faster than SSDlite's BN running
    statistics (momentum 0.03) can follow, so eval-mode predictions are garbage although train-mode
    ones are already good (measured: val mAP@.5 0.003 -> usable after recalibration at epoch 3).
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or len(data) == 0:
        return
    saved = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches below
        bn.train()
    step = max(1, len(data) // max_images)
    idx = list(range(0, len(data), step))[:max_images]
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            if len(chunk) < 2:
                continue  # train-mode BatchNorm needs more than one value per channel
            images, _ = model.transform([data.image(i).float().div(255).to(device) for i in chunk])
            features = model.backbone(images.tensors)
            model.head(list(features.values()))
    for bn, momentum in zip(bns, saved):
        bn.momentum = momentum
    model.eval()


def val_maps(gt_json: Path, dets: list[dict]) -> tuple[float, float]:
    """COCO (mAP@.5, mAP@[.5:.95]) of `dets` against the dataset.json `gt_json` (zeros without detections)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    from tasks.detect.evaluate import coco_from_dataset

    if not dets:
        return 0.0, 0.0
    gt = coco_from_dataset(gt_json)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[1])), max(0.0, float(ev.stats[0]))


# ----------------------------------------------------------------------------- train

def lightning_module(model, info: dict, train: DetectionData, val: DetectionData, val_json: Path, t, batch_size: int,
                     seed: int):
    """The SSD as a LightningModule (Lightning imported here: importing this module stays cheap)."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    class SSDModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model, self.bn_done_at, self.dets, self.batches = model, None, [], None

        def sampler(self) -> EpochBatches:  # rank and world are known once the trainer has set up
            if self.batches is None:
                self.batches = EpochBatches(len(train), batch_size, seed, float(t.hflip), self.global_rank,
                                            self.trainer.world_size)
            return self.batches

        def train_dataloader(self):
            return DataLoader(train, sampler=self.sampler(), batch_size=None, collate_fn=_as_is)

        def val_dataloader(self):
            chunks = [list(range(s, min(len(val), s + 16))) for s in range(0, len(val), 16)]
            return DataLoader(chunks, batch_size=None, collate_fn=_as_is)

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.model.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay))
            total = int(self.trainer.max_epochs) * self.sampler().steps_per_epoch()
            return warmup_then_decay(opt, int(t.warmup_steps), total, decay="cosine")

        def training_step(self, batch, batch_idx):
            loss = sum(self.model([im for im, _ in batch], [tg for _, tg in batch]).values())
            if not torch.isfinite(loss):
                raise HackathonError(f"Training loss became {loss.item()} at epoch {self.current_epoch}, "
                                     f"step {self.global_step}.",
                                     fix="Lower trainer.lr (e.g. trainer.lr=0.0005) and run again with --from train --force.")
            self.log("train_loss", loss, batch_size=len(batch), prog_bar=True)
            self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=len(batch))
            return loss

        def precise_bn(self):
            """Once per epoch, after its training batches: before validation and before last.ckpt. Every rank
            recalibrates (same weights, same images: same statistics, so the replicas stay equal)."""
            if self.bn_done_at == self.global_step:
                return
            mode = self.model.training
            recalibrate_batchnorm(self.model, train, self.device, int(t.bn_recalibration_images))
            self.model.train(mode)
            self.bn_done_at = self.global_step

        def on_validation_epoch_start(self):
            if not self.trainer.sanity_checking:
                self.precise_bn()
            self.model.score_thresh, self.dets = VAL_SCORE_THRESHOLD, []

        def on_train_epoch_end(self):
            self.precise_bn()

        def validation_step(self, idx, batch_idx):
            self.dets += detect_batch(self.model, val, idx, self.device)

        def on_validation_epoch_end(self):  # every rank sees all of val: the same number, no sync needed
            m50, m = val_maps(val_json, self.dets)
            self.log_dict({"val_map50": m50, "val_map": m, MONITOR: 0.1 * m50 + 0.9 * m}, prog_bar=True)

        def on_save_checkpoint(self, checkpoint):
            checkpoint["detector"] = info

    return SSDModule()


def trainer_section(cfg) -> dict:
    """The spec's `trainer:` for Lightning: without this module's own keys, our sampler instead of
    Lightning's distributed one, no sanity validation (the first real one comes after epoch 1)."""
    from omegaconf import OmegaConf

    settings = {k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items() if k not in OWN_TRAINER_KEYS}
    return {"num_sanity_val_steps": 0, "use_distributed_sampler": False, **settings}


def train_stage(ctx) -> None:
    from hackathon.core.init_weights import record_init
    from tasks.detect.stages import split_json

    t = ctx.cfg.trainer
    train = DetectionData(split_json(ctx, "train"))
    val_json = split_json(ctx, "val")
    val = DetectionData(val_json)
    name = model_name(ctx.cfg, on_gpu(t))
    size = ctx.cfg.model.get("input_size")
    info = {"model_name": name, "classes": list(train.ds.classes), "input_size": size}
    ctx.record(model=name, train_images=len(train), val_images=len(val))

    def build(trainer, batch_size: int):
        inits = {}
        model = build_model(name, len(train.ds.classes), ctx.cfg.model.init, size, ctx.cfg.model.get("backbone"), inits)
        for part, rec in inits.items():
            record_init(ctx, part, rec)
        return lightning_module(model, info, train, val, val_json, t, batch_size, int(ctx.cfg.seed))

    result = fit_resumable(ctx, build, trainer_section(ctx.cfg), int(t.batch_size), monitor=MONITOR, mode="max",
                           name=FIT_NAME, seed=int(ctx.cfg.seed))
    ctx.record(train_seconds=round(result.seconds, 1), best_val_fitness=result.best_score, epochs=result.trainer.current_epoch)
    ctx.write_metrics({"best_val_fitness": result.best_score})


def load_trained(checkpoints_dir: Path):
    """(model on CPU, {model_name, classes, input_size, epoch}, checkpoint path): the best checkpoint by
    val mAP@.5 of a run's checkpoints/ssd/, else its last.ckpt."""
    import torch

    folder = checkpoints_dir / FIT_NAME
    found = sorted(folder.glob("best-*.ckpt")) or sorted(folder.glob("last.ckpt"))
    if not found:
        raise HackathonError(f"No checkpoint in {folder}.", fix="Run the train stage first: hackathon run detect --from train")
    ck = torch.load(found[-1], map_location="cpu", weights_only=False)
    info = {**ck["detector"], "epoch": ck["epoch"]}
    model = build_model(info["model_name"], len(info["classes"]), input_size=info["input_size"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in ck["state_dict"].items()})
    return model, info, found[-1]


def infer_stage(ctx) -> None:
    """Detections of the best checkpoint on eval.split -> predictions/<split>.json (COCO results)."""
    import torch

    from tasks.detect.stages import split_json

    model, info, ck_path = load_trained(ctx.checkpoints_dir)
    device = torch.device("cuda" if on_gpu(ctx.cfg.trainer) else "cpu")
    split = str(ctx.cfg.eval.split)
    data = DetectionData(split_json(ctx, split), cache=False)
    model.to(device)
    t0 = time.time()
    dets = predict(model, data, device, score_threshold=float(ctx.cfg.infer.score_threshold),
                   progress=f"inference ({split})")
    atomic_write_json(ctx.path("predictions", f"{split}.json"), dets, indent=None)
    ctx.record(checkpoint=str(ck_path), checkpoint_epoch=info["epoch"], detections=len(dets), device=str(device),
               images=len(data), seconds_per_image=round((time.time() - t0) / max(1, len(data)), 4))
