"""`hackathon detect balance`: oversample the rare classes in the TRAIN split only, with augmented copies
(horizontal flip, scale, colour) of the images that contain them. val/test are never touched, so scores
stay honest. Reports class counts before and after.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from hackathon.core.atomic import atomic_path, atomic_write_json

from data_tools.detection.dataset import Box, Dataset, ImageRecord, load_dataset, save_dataset


def augment(image, boxes: list[Box], rng: random.Random, flip: bool = True, scale: tuple[float, float] = (0.8, 1.2),
            colour: float = 0.3):
    """(augmented PIL image, boxes) — a random horizontal flip, isotropic rescale and colour jitter."""
    from PIL import ImageEnhance, ImageOps

    w, h = image.size
    boxes = [Box(b.label, b.x1, b.y1, b.x2, b.y2, b.difficult) for b in boxes]
    if flip and rng.random() < 0.5:
        image = ImageOps.mirror(image)
        boxes = [Box(b.label, w - b.x2, b.y1, w - b.x1, b.y2, b.difficult) for b in boxes]
    if scale and scale[1] > 0:
        s = rng.uniform(*scale)
        nw, nh = max(8, int(round(w * s))), max(8, int(round(h * s)))
        image = image.resize((nw, nh))
        sx, sy = nw / w, nh / h
        boxes = [Box(b.label, b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy, b.difficult) for b in boxes]
    if colour > 0:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(rng.uniform(1 - colour, 1 + colour))
    return image, boxes


def rare_classes(counts: dict[str, int], target_ratio: float) -> list[str]:
    """Classes with fewer boxes than target_ratio x the most frequent class (and at least one box)."""
    top = max(counts.values(), default=0)
    return [c for c, n in counts.items() if 0 < n < target_ratio * top]


def balance_train(train_json: str | os.PathLike, out_dir: str | os.PathLike, target_ratio: float = 0.5,
                  max_copies_per_image: int = 4, seed: int = 0, flip: bool = True,
                  scale: tuple[float, float] = (0.8, 1.2), colour: float = 0.3) -> tuple[Path, dict]:
    """Write out_dir/train.json = train + augmented copies of rare-class images (out_dir/images/), until
    each rare class reaches target_ratio x the (original) most frequent class or every image containing it has
    max_copies_per_image copies. Returns (train.json, report) and writes out_dir/balance_report.json."""
    from PIL import Image

    ds = load_dataset(train_json)
    out = Path(out_dir)
    before = ds.box_counts()
    rng = random.Random(seed)
    added: list[ImageRecord] = []
    copies: dict[int, int] = {}
    counts = dict(before)
    goal = target_ratio * max(before.values(), default=0)  # fixed: copies also add frequent-class boxes
    for cls in sorted(rare_classes(before, target_ratio), key=lambda c: before[c]):
        holders = [im for im in ds.images if any(b.label == cls for b in im.boxes)]
        k = 0
        while counts[cls] < goal and holders:
            img = holders[k % len(holders)]
            k += 1
            if copies.get(id(img), 0) >= max_copies_per_image:
                if all(copies.get(id(h), 0) >= max_copies_per_image for h in holders):
                    break
                continue
            copies[id(img)] = copies.get(id(img), 0) + 1
            with Image.open(img.path) as im:
                aug, boxes = augment(im.convert("RGB"), img.boxes, rng, flip, scale, colour)
            target = out / "images" / f"{img.path.stem}_aug{copies[id(img)]}.jpg"
            with atomic_path(target) as tmp:
                aug.save(tmp, format="JPEG", quality=92)
            added.append(ImageRecord(target, aug.width, aug.height, boxes, source=f"augmented from {img.path.name}",
                                     split="train"))
            for b in boxes:
                counts[b.label] = counts.get(b.label, 0) + 1
    balanced = Dataset(ds.images + added, ds.classes)
    path = save_dataset(balanced, out / "train.json")
    report = {"before": before, "after": balanced.box_counts(), "added_images": len(added),
              "rare_classes": rare_classes(before, target_ratio), "target_ratio": target_ratio,
              "images_before": len(ds.images), "images_after": len(balanced.images)}
    atomic_write_json(out / "balance_report.json", report)
    return path, report
