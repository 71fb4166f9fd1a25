"""Stages shared by both detect backends: prepare (ingest or demo) -> split -> balance -> export.

Run-dir layout they write (the TAO pipeline reads the same paths through the helpers below):
    data/images/, data/dataset.json, data/report.json, data/report.html     (prepare)
    split/{train,val,test}.json, split/split_report.json                    (split)
    balanced/train.json, balanced/images/, balanced/balance_report.json     (balance: the train split to use)
    export/kitti/{train,val,test}/{images,labels,kitti_index.json}          (export, at export.width x height)
    export/coco/{train,val,test}/{images/,annotations.json}                 (export, when export.coco)
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.atomic import read_json
from hackathon.core.errors import HackathonError
from hackathon.core.fingerprint import file_sha256
from hackathon.core.paths import REPO_ROOT, data_sources, demo_data_root, user_path
from hackathon.core.report import add_report_assets

SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------- where things are

def dataset_json(ctx) -> Path:
    return ctx.run_dir / "data" / "dataset.json"


def split_json(ctx, split: str) -> Path:
    """COCO ground truth of one split; for 'train' the balanced one (what training must use)."""
    if split == "train":
        return ctx.run_dir / "balanced" / "train.json"
    return ctx.run_dir / "split" / f"{split}.json"


def kitti_dir(ctx, split: str) -> Path:
    """KITTI export of one split (images/, labels/, kitti_index.json)."""
    return ctx.run_dir / "export" / "kitti" / split


def aliases_file(cfg) -> Path | None:
    a = cfg.data.get("aliases")
    if not a:
        return None
    p = Path(str(a))
    return p if p.is_absolute() else (REPO_ROOT / p if (REPO_ROOT / p).exists() else user_path(a))


def demo_dir(cfg) -> Path:
    d = cfg.demo
    return demo_data_root() / "detect" / f"synth-masks-s{cfg.seed}-n{d.num_images}-{d.image_size}px-f{d.max_faces}"


# ----------------------------------------------------------------------------- stages

def prepare(ctx) -> None:
    """Ingest data.source (or generate + ingest the demo) into data/; record the data fingerprint."""
    from data_tools.detection.ingest import ingest
    from data_tools.detection.synth_masks import synth_masks

    cfg = ctx.cfg
    sources = data_sources(cfg.data.source)
    if not sources:
        d = cfg.demo
        ctx.log.info("data.source is null: using the synthetic face-mask demo (%d images)", d.num_images)
        sources = [synth_masks(demo_dir(cfg), num_images=d.num_images, seed=cfg.seed, image_size=d.image_size,
                               max_faces=d.max_faces)]
        ctx.record(demo_data=str(sources[0]))
    for s in sources:
        if not s.exists():
            raise HackathonError(f"data.source {s} does not exist.",
                                 fix="Point data.source at your dataset folder(s), or set data.source=null for the demo.")
    out = ctx.dir("data")
    ds_json, report = ingest(sources, out, aliases_file=aliases_file(cfg), fmt=cfg.data.get("format"))
    ctx.set_data_fingerprint(file_sha256(ds_json))
    counts = report.counts()
    ctx.record(issue_counts=counts, sources=[str(s) for s in sources])
    summary = read_json(out / "report.json")
    add_report_assets(ctx.run_dir, tables=[
        {"title": "Ingest findings", "rows": [{"finding": k, "count": v} for k, v in counts.items()]},
        {"title": "Classes after ingest", "rows": [summary["class_counts"]]}])
    ctx.log.info("ingested %d images, %d boxes; findings: %s", summary["images"], summary["boxes"], counts)


def split(ctx) -> None:
    from data_tools.detection.dataset import load_dataset
    from data_tools.detection.report_html import write_html_report
    from data_tools.detection.split import split_dataset

    cfg = ctx.cfg
    fractions = {s: float(cfg.split[s]) for s in SPLITS}
    split_dataset(dataset_json(ctx), ctx.dir("split"), fractions, seed=int(cfg.seed))
    report = read_json(ctx.run_dir / "split" / "split_report.json")
    if report["classes_missing_from_a_split"]:
        ctx.log.warning("classes missing from a split (too few images): %s", report["classes_missing_from_a_split"])
    summary = read_json(ctx.run_dir / "data" / "report.json", default={})
    write_html_report(load_dataset(ctx.run_dir / "split" / "dataset.json"), ctx.run_dir / "split" / "report.html",
                      title="Detection data after split", summary=summary)
    add_report_assets(ctx.run_dir, tables=[{"title": "Class counts per split",
                                           "rows": [{"split": s, **report[s]} for s in SPLITS]}])


def balance(ctx) -> None:
    from data_tools.detection.balance import balance_train

    b = ctx.cfg.balance
    out = ctx.dir("balanced")
    source = ctx.run_dir / "split" / "train.json"
    if not b.enabled:
        from data_tools.detection.dataset import load_dataset, save_dataset

        save_dataset(load_dataset(source), out / "train.json")  # re-saved so relative image paths stay right
        ctx.record(balanced=False)
        return
    _, report = balance_train(source, out, target_ratio=float(b.target_ratio),
                              max_copies_per_image=int(b.max_copies_per_image), seed=int(ctx.cfg.seed),
                              flip=bool(b.flip), scale=(float(b.scale_min), float(b.scale_max)), colour=float(b.colour))
    ctx.record(balance=report)
    add_report_assets(ctx.run_dir, tables=[{"title": "Train boxes before/after balancing", "rows": [
        {"when": "before", **report["before"]}, {"when": "after", **report["after"]}]}])


def export(ctx) -> None:
    from data_tools.detection.coco_export import export_coco
    from data_tools.detection.kitti import export_kitti

    e = ctx.cfg.export
    for s in SPLITS:
        if e.kitti:
            export_kitti(split_json(ctx, s), kitti_dir(ctx, s), int(e.width), int(e.height))
        if e.coco:
            export_coco(split_json(ctx, s), ctx.run_dir / "export" / "coco" / s)
    ctx.record(kitti=bool(e.kitti), coco=bool(e.coco), size=[int(e.width), int(e.height)])


def shared_stages():
    """prepare -> split -> balance -> export, for any backend's build_stages."""
    from hackathon.core.runner import Stage

    return [
        Stage("prepare", prepare, "data", config_keys=("data", "demo", "seed"), inputs=lambda ctx: data_sources(ctx.cfg.data.source)),
        Stage("split", split, "data", config_keys=("split", "seed")),
        Stage("balance", balance, "data", config_keys=("balance", "seed")),
        Stage("export", export, "export", config_keys=("export",)),
    ]
