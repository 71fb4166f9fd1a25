"""Local backend: torchvision SSD trained on the balanced train split, then inference on the eval split.

- Model: ssdlite320_mobilenet_v3_large on CPU, ssd300_vgg16 on GPU (torch.model=auto), from scratch
  (weights=None, weights_backbone=None: nothing is ever downloaded) or from a local state-dict file.
- Checkpoints: checkpoints/last.pt after every epoch (model, optimizer, scheduler, epoch, batch size,
  RNG state) and checkpoints/best.pt (best val mAP@.5). A rerun resumes from last.pt.
- CUDA OOM: hackathon.core.oom.run_with_oom_backoff halves the batch size and resumes from last.pt.
- Logs: logs/torch_train/metrics.csv (epoch, step, train_loss, lr, val_map50, seconds) + loss curve PNG.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from pathlib import Path

from hackathon.core.atomic import atomic_path, atomic_write_json
from hackathon.core.errors import HackathonError
from hackathon.core.progress import Bar, track

CPU_MODEL = "ssdlite320_mobilenet_v3_large"
GPU_MODEL = "ssd300_vgg16"
MODELS = (CPU_MODEL, GPU_MODEL)


# ----------------------------------------------------------------------------- setup

def pick_device(cfg):
    import torch

    want = str(cfg.torch.device)
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise HackathonError(f"torch.device={want} but CUDA is not available here.",
                             fix="Use torch.device=auto or cpu, or check `hackathon doctor` for the GPU driver.")
    return torch.device(want)


def model_name(cfg, device) -> str:
    name = str(cfg.torch.model)
    if name == "auto":
        return GPU_MODEL if device.type == "cuda" else CPU_MODEL
    if name not in MODELS:
        raise HackathonError(f"torch.model={name!r} is not supported.", fix=f"Use auto, {CPU_MODEL} or {GPU_MODEL}.")
    return name


def set_input_size(model, size: int | None) -> None:
    """Run the SSD at size x size instead of its native 320/300. SSD's default boxes are fractions of
    the image and feature-map sizes are read at run time, so only the resize step changes; a smaller
    size is what makes the CPU demo train in minutes (cost grows with size squared)."""
    if size:
        model.transform.fixed_size = (int(size), int(size))
        model.transform.min_size = (int(size),)
        model.transform.max_size = int(size)


def build_model(name: str, num_classes: int, weights_file: str | None = None, input_size: int | None = None):
    """SSD with `num_classes` foreground classes (+ background). Never downloads: weights come from
    `weights_file` (a state dict or a checkpoint of ours) or the model starts from scratch."""
    import torch
    from torchvision.models import detection

    builder = getattr(detection, name)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    set_input_size(model, input_size)
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise HackathonError(f"torch.weights file {path} does not exist.",
                                 fix="Give a local .pt/.pth state dict, or torch.weights=null to train from scratch.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        own = model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not fitting:
            raise HackathonError(f"No tensor in {path} fits {name}.", fix=f"Use weights saved from a {name} model.")
        model.load_state_dict(fitting, strict=False)
    return model


# ----------------------------------------------------------------------------- data

class DetectionData:
    """Images of a COCO dataset.json decoded once into uint8 tensors (the demo is small; real data on the
    workstation streams from disk through the same interface)."""

    def __init__(self, dataset_json: Path, cache: bool = True):
        from data_tools.detection.dataset import load_dataset

        self.ds = load_dataset(dataset_json)
        self.cache = cache
        self._tensors: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.ds.images)

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

    def training_item(self, i: int, rng: random.Random, hflip: float):
        img, tgt = self.image(i).float().div(255), self.target(i)
        if rng.random() < hflip:
            img = img.flip(-1)
            w = img.shape[-1]
            boxes = tgt["boxes"].clone()
            boxes[:, [0, 2]] = w - tgt["boxes"][:, [2, 0]]
            tgt = {**tgt, "boxes": boxes}
        return img, tgt


# ----------------------------------------------------------------------------- train

def _lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def predict(model, data: DetectionData, device, batch_size: int = 16, score_threshold: float = 0.01,
            progress: str | None = None) -> list[dict]:
    """COCO results for every image of `data` (boxes in original pixels: SSD's transform maps them back).
    `progress`: the description of a progress bar (None: no bar, e.g. for the per-epoch validation)."""
    import torch

    model.eval()
    model.score_thresh = score_threshold
    results = []
    starts = range(0, len(data), batch_size)
    with torch.inference_mode():
        for start in track(starts, progress, unit="batch") if progress else starts:
            idx = list(range(start, min(len(data), start + batch_size)))
            outputs = model([data.image(i).float().div(255).to(device) for i in idx])
            for i, out in zip(idx, outputs):
                image_id = data.ds.images[i].id
                for box, label, score in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist()):
                    x1, y1, x2, y2 = box
                    results.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                                    "bbox": [x1, y1, x2 - x1, y2 - y1]})
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


def _val_map50(model, data: DetectionData, gt_json: Path, device) -> float:
    import contextlib
    import io

    import numpy as np
    from pycocotools.cocoeval import COCOeval

    from tasks.detect.evaluate import coco_from_dataset

    dets = predict(model, data, device)
    if not dets:
        return 0.0
    gt = coco_from_dataset(gt_json)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[0]))


def _save_checkpoint(path: Path, **state) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _process_group(device):
    """(rank, world size) under torchrun (RANK/WORLD_SIZE set): joins the process group (gloo on CPU,
    nccl on GPU); (0, 1) in a plain run."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", 1))
    if world < 2:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def train_once(ctx, batch_size: int) -> dict:
    """Train (resuming from checkpoints/last.pt when present) until torch.epochs or the time budget.
    Under torchrun each rank trains on its share of every global batch (batch_size per rank) through
    DistributedDataParallel; rank 0 alone validates and writes checkpoints, the CSV and the records."""
    import torch

    from hackathon.core.elastic import weights_digest_by_rank
    from tasks.detect.stages import split_json

    t = ctx.cfg.torch
    device = pick_device(ctx.cfg)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    rank, world = _process_group(device)
    if t.threads:
        torch.set_num_threads(int(t.threads))
    torch.manual_seed(int(ctx.cfg.seed))
    train = DetectionData(split_json(ctx, "train"))
    val_json = split_json(ctx, "val")
    val = DetectionData(val_json)
    name = model_name(ctx.cfg, device)
    model = build_model(name, len(train.ds.classes), t.weights, t.get("input_size")).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(t.lr), weight_decay=float(t.weight_decay))
    epochs = int(t.epochs)
    steps_per_epoch = max(1, math.ceil(len(train) / (batch_size * world)))
    total_steps = epochs * steps_per_epoch
    last = ctx.checkpoints_dir / "last.pt"
    start_epoch, step, best_map, elapsed = 0, 0, -1.0, 0.0
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        start_epoch, step, best_map, elapsed = ck["epoch"] + 1, ck["step"], ck["best_map50"], ck.get("train_seconds", 0.0)
        if ck.get("batch_size") != batch_size:  # OOM back-off: keep the schedule's length in epochs
            total_steps = step + (epochs - start_epoch) * steps_per_epoch
        ctx.record(resumed_from=str(last), resumed_epoch=start_epoch)
        ctx.log.info("resuming from %s at epoch %d", last, start_epoch)
    ctx.record(model=name, device=str(device), train_images=len(train), val_images=len(val))
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    csv_path = ctx.dir("logs", "torch_train") / "metrics.csv"
    progress = Bar(ctx.stage or "train", total_steps, unit="step")
    progress.update(completed=step)
    try:
        stopped_by_budget, best_map, elapsed = _epochs(ctx, model, ddp, rank, world, optimizer, train, val, val_json,
                                                       device, name, batch_size, start_epoch, step, best_map,
                                                       elapsed, total_steps, steps_per_epoch, csv_path, progress)
    finally:
        progress.close()
    digests = weights_digest_by_rank(model)
    if digests:
        ctx.record(weights_sha256_by_rank=digests, world_size=world)
    if world > 1:
        torch.distributed.destroy_process_group()  # infer/evaluate run in the coordinator alone
    if stopped_by_budget:  # the budget is epochs; the wall-clock cap is a safety that must never pass unnoticed
        warning = (f"CUT SHORT: training stopped after {elapsed:.0f} s by the safety cap torch.max_train_minutes="
                   f"{t.max_train_minutes}, before torch.epochs={t.epochs}; this model is not what the spec asks for")
        ctx.log.warning(warning)
        print(warning, file=sys.__stderr__, flush=True)  # the console, not just the stage log
    ctx.record(stopped_by_time_budget=stopped_by_budget, train_seconds=round(elapsed, 1), best_val_map50=best_map)
    return {"best_val_map50": best_map, "cut_by_time": stopped_by_budget}


def _epochs(ctx, model, ddp, rank, world, optimizer, train, val, val_json, device, name, batch_size, start_epoch,
            step, best_map, elapsed, total_steps, steps_per_epoch, csv_path, progress) -> tuple[bool, float, float]:
    """The epoch loop of train_once: (stopped by the time budget, best val mAP@.5, train seconds)."""
    import torch

    t = ctx.cfg.torch
    epochs = int(t.epochs)
    last, best = ctx.checkpoints_dir / "last.pt", ctx.checkpoints_dir / "best.pt"
    budget = float(t.max_train_minutes) * 60
    stopped_by_budget = False
    for epoch in range(start_epoch, epochs):
        if budget and elapsed >= budget:
            stopped_by_budget = True
            break
        t0 = time.time()
        model.train()
        rng = random.Random(f"{ctx.cfg.seed}-{epoch}")
        order = list(range(len(train)))
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), batch_size * world):
            if budget and world == 1 and elapsed + (time.time() - t0) >= budget:
                stopped_by_budget = True  # mid-epoch: this epoch is finished short and checkpointed below
                break
            shares = [order[start + r * batch_size:start + (r + 1) * batch_size] for r in range(world)]
            if min(len(c) for c in shares) < 2:
                continue  # BatchNorm cannot train on one image (SSDlite's last maps are 1x1); all ranks skip
            chunk = shares[rank]
            items = [train.training_item(i, rng, float(t.hflip)) for i in chunk]
            images = [im.to(device) for im, _ in items]
            targets = [{k: v.to(device) for k, v in tg.items()} for _, tg in items]
            for g in optimizer.param_groups:
                g["lr"] = _lr_at(step, total_steps, float(t.lr), int(t.warmup_steps))
            loss_dict = ddp(images, targets)
            loss = sum(loss_dict.values())
            if not torch.isfinite(loss):
                raise HackathonError(f"Training loss became {loss.item()} at epoch {epoch}, step {step}.",
                                     fix="Lower torch.lr (e.g. torch.lr=0.0005) and run again with --from train --force.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            progress.update(completed=step, epoch=f"{epoch + 1}/{epochs}", loss=losses[-1])
        # every rank recalibrates (same weights, same images: same statistics, so the replicas stay equal)
        recalibrate_batchnorm(model, train, device, int(t.bn_recalibration_images))  # before eval and the checkpoint
        val_map = float("nan")
        if rank == 0 and ((epoch + 1) % max(1, int(t.eval_every)) == 0 or epoch == epochs - 1):
            val_map = _val_map50(model, val, val_json, device)
        elapsed += time.time() - t0
        if world > 1:  # every rank takes rank 0's clock for the time budget, so all stop at the same epoch
            clock = [elapsed]
            torch.distributed.broadcast_object_list(clock, src=0)
            elapsed = clock[0]
            if rank != 0:
                continue
        state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch, step=step,
                     batch_size=batch_size, model_name=name, classes=list(train.ds.classes), train_seconds=elapsed,
                     input_size=t.get("input_size"),
                     best_map50=max(best_map, val_map if val_map == val_map else -1.0))
        if val_map == val_map and val_map > best_map:
            best_map = val_map
            _save_checkpoint(best, **state)
        _save_checkpoint(last, **state)
        row = {"epoch": epoch, "step": step, "train_loss": round(sum(losses) / max(1, len(losses)), 5),
               "lr": round(optimizer.param_groups[0]["lr"], 7), "val_map50": round(val_map, 4), "steps": len(losses),
               "seconds": round(time.time() - t0, 1)}
        _append_csv(csv_path, row)
        ctx.log.info("epoch %d/%d loss %.4f val mAP@.5 %.3f (%.0fs)", epoch + 1, epochs, row["train_loss"], val_map, row["seconds"])
        progress.update(completed=step, val_map50=None if val_map != val_map else val_map)
        if stopped_by_budget:
            break
    return stopped_by_budget, best_map, elapsed


def _loss_curve(ctx) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.detect.stages import add_report_assets

    csv_path = ctx.run_dir / "logs" / "torch_train" / "metrics.csv"
    if not csv_path.exists():
        return
    rows = list(csv.DictReader(open(csv_path)))
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot([int(r["epoch"]) + 1 for r in rows], [float(r["train_loss"]) for r in rows], label="train loss")
    ax.set(xlabel="epoch", ylabel="loss")
    ax2 = ax.twinx()
    ax2.plot([int(r["epoch"]) + 1 for r in rows], [float(r["val_map50"]) for r in rows], "g--", label="val mAP@.5")
    ax2.set(ylabel="val mAP@.5", ylim=(0, 1))
    fig.legend(loc="upper center")
    fig.tight_layout()
    with atomic_path(ctx.run_dir / "logs" / "torch_train" / "curves.png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    add_report_assets(ctx, images=[{"path": "logs/torch_train/curves.png", "caption": "Training loss and val mAP@.5 per epoch"}])


def train_stage(ctx) -> None:
    from hackathon.core.oom import run_with_oom_backoff

    if not ctx.resuming:  # a fresh (changed-config) training must not pick up an old run's weights
        for stale in ("last.pt", "best.pt"):
            (ctx.checkpoints_dir / stale).unlink(missing_ok=True)
        (ctx.run_dir / "logs" / "torch_train" / "metrics.csv").unlink(missing_ok=True)
    result = run_with_oom_backoff(ctx, int(ctx.cfg.torch.batch_size), lambda bs: train_once(ctx, bs))
    if int(os.environ.get("RANK", 0)) != 0:  # a torchrun worker: rank 0 writes the curves and metrics
        return
    _loss_curve(ctx)
    ctx.write_metrics({"best_val_map50": result["best_val_map50"], "train_cut_by_time": result["cut_by_time"]})


def load_trained(checkpoints_dir: Path):
    """(model on CPU, checkpoint dict, its path): best.pt, else last.pt, of a run's checkpoints/."""
    import torch

    ck_path = checkpoints_dir / "best.pt"
    if not ck_path.exists():
        ck_path = checkpoints_dir / "last.pt"
    if not ck_path.exists():
        raise HackathonError(f"No checkpoint in {checkpoints_dir}.", fix="Run the train stage first: hackathon run detect --from train")
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    model = build_model(ck["model_name"], len(ck["classes"]), input_size=ck.get("input_size"))
    model.load_state_dict(ck["model"])
    return model, ck, ck_path


def infer_stage(ctx) -> None:
    """Detections of the best checkpoint on eval.split -> predictions/<split>.json (COCO results)."""
    from tasks.detect.stages import split_json

    model, ck, ck_path = load_trained(ctx.checkpoints_dir)
    device = pick_device(ctx.cfg)
    split = str(ctx.cfg.eval.split)
    data = DetectionData(split_json(ctx, split), cache=False)
    model.to(device)
    t0 = time.time()
    dets = predict(model, data, device, score_threshold=float(ctx.cfg.torch.score_threshold),
                   progress=f"inference ({split})")
    atomic_write_json(ctx.path("predictions", f"{split}.json"), dets, indent=None)
    ctx.record(checkpoint=str(ck_path), checkpoint_epoch=ck["epoch"], detections=len(dets),
               images=len(data), seconds_per_image=round((time.time() - t0) / max(1, len(data)), 4))
