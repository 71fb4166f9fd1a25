"""`hackathon detect split`: seeded train/val/test split, stratified on each image's rarest class so the
rare class (mask_weared_incorrect) lands in every split.

Writes out_dir/{train,val,test}.json (COCO, same images, `split` set) and split_report.json.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from hackathon.core.atomic import atomic_write_json
from hackathon.core.errors import HackathonError

from data_tools.detection.dataset import Dataset, load_dataset, save_dataset

SPLITS = ("train", "val", "test")


def _group_sizes(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Images of one stratum per split: val/test get at least one when the stratum has >= 3 images."""
    sizes = {s: int(round(n * fractions[s])) for s in ("val", "test")}
    if n >= 3:
        sizes = {s: max(1, v) if fractions[s] > 0 else 0 for s, v in sizes.items()}
    sizes["train"] = max(0, n - sizes["val"] - sizes["test"])
    return sizes


def stratified_split(ds: Dataset, fractions: dict[str, float], seed: int = 0) -> Dataset:
    """Set `split` on every image (a new Dataset sharing the records' data)."""
    total = sum(fractions.get(s, 0) for s in SPLITS)
    if abs(total - 1.0) > 1e-6 or any(fractions.get(s, 0) < 0 for s in SPLITS):
        raise HackathonError(f"Split fractions {fractions} must be >= 0 and add up to 1.",
                             fix="e.g. split.train=0.7 split.val=0.15 split.test=0.15")
    fractions = {s: float(fractions.get(s, 0)) for s in SPLITS}
    counts = ds.box_counts()
    rarity = {c: counts.get(c, 0) for c in ds.classes}
    strata: dict[str, list] = {}
    for img in ds.images:
        present = {b.label for b in img.boxes}
        key = min(present, key=lambda c: (rarity.get(c, 0), c)) if present else "<no boxes>"
        strata.setdefault(key, []).append(img)
    rng = random.Random(seed)
    for key in sorted(strata, key=lambda k: (len(strata[k]), k)):
        group = sorted(strata[key], key=lambda im: (im.sha256 or "", str(im.path)))  # order-independent
        rng.shuffle(group)
        sizes = _group_sizes(len(group), fractions)
        i = 0
        for split in ("test", "val", "train"):
            for img in group[i:i + sizes[split]]:
                img.split = split
            i += sizes[split]
    return ds


def split_dataset(dataset_json: str | os.PathLike, out_dir: str | os.PathLike,
                  fractions: dict[str, float] | None = None, seed: int = 0) -> dict[str, Path]:
    """Split dataset.json into out_dir/{train,val,test}.json; return {split: path}."""
    fractions = fractions or {"train": 0.7, "val": 0.15, "test": 0.15}
    ds = stratified_split(load_dataset(dataset_json), fractions, seed)
    out = Path(out_dir)
    paths = {s: save_dataset(ds.subset(s), out / f"{s}.json") for s in SPLITS}
    save_dataset(ds, out / "dataset.json")
    report = {s: {"images": len(ds.subset(s).images), **ds.subset(s).box_counts()} for s in SPLITS}
    report["seed"] = seed
    report["fractions"] = fractions
    missing = [c for c in ds.classes for s in SPLITS if ds.box_counts().get(c) and not ds.subset(s).box_counts().get(c)]
    report["classes_missing_from_a_split"] = sorted(set(missing))
    atomic_write_json(out / "split_report.json", report)
    return paths
