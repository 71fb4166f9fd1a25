"""Bench: the detection demo (specs/detect/demo.yaml, same seed and epochs) from scratch vs the packaged
ImageNet MobileNetV2 backbone. Prints test mAP@.5, mAP and the first epoch whose val mAP@.5 >= 0.9.

    .venv/bin/python bench/detect_init.py [--out DIR] [--starts scratch packaged:mobilenet_v2]

Each start is one `hackathon run detect --run-dir DIR/<start>`: a finished run is read, not retrained.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

STARTS = ("scratch", "packaged:mobilenet_v2")
# model.backbone=scratch trains the demo's default model (ssdlite320_mobilenet_v3_large) from random weights;
# `mnv2-scratch` is the packaged start's own architecture from random weights (the pretraining alone).
OVERRIDES = {"mnv2-scratch": ["model.backbone=scratch", "model.name=ssdlite320_mobilenet_v2"]}


def first_epoch_at(run_dir: Path, threshold: float = 0.9) -> int | None:
    """1-based epoch of the first validation with val_map50 >= threshold (Lightning's CSV logs)."""
    for log in sorted((run_dir / "logs" / "ssd").glob("attempt-*/metrics.csv")):
        for row in csv.DictReader(log.open()):
            if row.get("val_map50") and float(row["val_map50"]) >= threshold:
                return int(row["epoch"]) + 1
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/hackathon-bench/detect_init"))
    ap.add_argument("--starts", nargs="+", default=list(STARTS))
    args = ap.parse_args()
    exe = Path(sys.executable).parent / "hackathon"
    print(f"{'start':24} {'model':32} {'mAP@.5':>7} {'mAP':>7} {'epoch val mAP@.5>=0.9':>22} {'train s':>8}")
    for start in args.starts:
        run_dir = args.out / start.replace(":", "-")
        overrides = OVERRIDES.get(start, [f"model.backbone={start}"])
        subprocess.run([str(exe), "run", "detect", "--run-dir", str(run_dir), "model.init=scratch", *overrides],
                       check=True, stdout=subprocess.DEVNULL)
        m = json.loads((run_dir / "metrics.json").read_text())
        train = json.loads((run_dir / "meta.json").read_text())["stages"]["train"]
        print(f"{start:24} {train['model']:32} {m['map50']:7.4f} {m['map']:7.4f} {str(first_epoch_at(run_dir)):>22} "
              f"{train.get('train_seconds', 0):8.0f}")


if __name__ == "__main__":
    main()
