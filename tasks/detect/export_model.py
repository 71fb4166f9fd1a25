"""Detector export stage `export_model` (not the shared `export` stage, which writes KITTI/COCO data).

backend=torch: the trained torchvision SSD/SSDlite -> export/detector.onnx with torch.onnx.export (opset
17: Resize, TopK and NonMaxSuppression). One graph does what torchvision's SSD does in eval mode:
uint8 RGB [H, W, 3] of any size -> float, resize to the training input size (bilinear, as
GeneralizedRCNNTransform), normalise, backbone + head, anchors, box decoding, per-class top-k + NMS, and
boxes scaled back to the original pixels. Outputs `boxes` [N, 4] (x1, y1, x2, y2), `scores` [N],
`labels` [N] (class ids 1..K, names in detector.json). The score floor baked into the graph is
infer.score_threshold (what the infer stage keeps); the served default threshold is onnx.score_threshold.

The check, on the test split's images (demo inputs): torchvision's own output vs the predictor
(tasks/detect/onnx_infer.py, what `serve` runs). A torchvision detection above onnx.check_score counts as
reproduced when an ONNX detection of the same class overlaps it at IoU >= onnx.check_iou (one-to-one,
highest scores first); both directions are counted, plus the max score and box-corner differences of the
matched pairs. Outside the tolerances the stage fails.

backend=tao: TAO's exported .onnx (tao_export) is collected into the same layout with a detector.json
saying it needs TensorRT's plugins (NMS): onnxruntime cannot run it, so parity is not checkable on this
CPU; on a GPU the TensorRT engine stage (tao_engine) and Triton's TensorRT backend run it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from data_tools.detection.dataset import box_iou
from hackathon.core.atomic import atomic_path, atomic_write_json
from hackathon.core.errors import HackathonError
from hackathon.core.export_check import agreement, record_check, sig, write_check
from tasks.detect.onnx_infer import EXPORT_DIR, INFO_NAME, ONNX_NAME

SCORE_TOLERANCE = 1e-3  # softmax scores in [0, 1]
TAO_NOTE = ("TAO's ONNX uses TensorRT plugin layers (e.g. BatchedNMS_TRT) that onnxruntime does not have: "
            "parity is not checkable on CPU; it is measured where a GPU runs the tao_engine stage / Triton's TensorRT backend.")


def export_graph(model):
    """torchvision SSD in eval mode wrapped as image uint8 [H, W, 3] -> (boxes, scores, labels)."""
    import torch

    class SsdGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ssd = model

        def forward(self, image):
            x = image.permute(2, 0, 1).float().div(255)
            size = torch._shape_as_tensor(image)[:2].float()  # traced from the input, not a constant
            images, _ = self.ssd.transform([x])
            features = list(self.ssd.backbone(images.tensors).values())
            head = self.ssd.head(features)
            anchors = self.ssd.anchor_generator(images, features)
            det = self.ssd.postprocess_detections(head, anchors, images.image_sizes)[0]
            height, width = images.image_sizes[0]  # the fixed training input size
            scale = torch.stack([size[1] / width, size[0] / height, size[1] / width, size[0] / height])
            return det["boxes"] * scale, det["scores"], det["labels"]

    return SsdGraph().eval()


def export_onnx(model, target: Path, opset: int) -> Path:
    import torch

    example = torch.zeros((97, 131, 3), dtype=torch.uint8)  # odd size: nothing may be baked in from it
    with atomic_path(target, suffix=".onnx") as tmp, torch.no_grad():
        torch.onnx.export(export_graph(model), (example,), str(tmp), input_names=["image"],
                          output_names=["boxes", "scores", "labels"], opset_version=int(opset), dynamo=False,
                          dynamic_axes={"image": {0: "height", 1: "width"}, "boxes": {0: "detections"},
                                        "scores": {0: "detections"}, "labels": {0: "detections"}})
    return target


def match(ref: dict, got: dict, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one pairs (ref index, got index): same label, IoU >= min_iou, highest ref scores first."""
    iou = box_iou(ref["boxes"], got["boxes"])
    taken, pairs = set(), []
    for i in np.argsort(-ref["scores"], kind="stable"):
        candidates = [j for j in np.argsort(-iou[i], kind="stable")
                      if j not in taken and iou[i, j] >= min_iou and got["labels"][j] == ref["labels"][i]]
        if candidates:
            taken.add(candidates[0])
            pairs.append((int(i), int(candidates[0])))
    return pairs


def compare_image(ref: dict, got: dict, min_score: float, min_iou: float) -> dict:
    ref = {k: v[ref["scores"] >= min_score] for k, v in ref.items()}
    got = {k: v[got["scores"] >= min_score] for k, v in got.items()}
    pairs = match(ref, got, min_iou)
    score_diff = max((abs(float(ref["scores"][i] - got["scores"][j])) for i, j in pairs), default=0.0)
    box_diff = max((float(np.abs(ref["boxes"][i] - got["boxes"][j]).max()) for i, j in pairs), default=0.0)
    return {"torch_detections": int(len(ref["scores"])), "onnx_detections": int(len(got["scores"])),
            "matched": len(pairs), "score_max_abs_diff": sig(score_diff), "box_max_abs_diff_px": sig(box_diff)}


def torch_detections(model, image: np.ndarray) -> dict:
    import torch

    with torch.no_grad():
        out = model([torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)])[0]
    return {"boxes": out["boxes"].numpy(), "scores": out["scores"].numpy(), "labels": out["labels"].numpy()}


def check_export(model, predictor, images: list[Path], min_score: float, min_iou: float) -> dict:
    from PIL import Image

    from tasks.detect.onnx_infer import to_rgb_array

    items = []
    for path in images:
        with Image.open(path) as im:
            rgb = to_rgb_array(im)
        ref = torch_detections(model, rgb)
        boxes, scores, labels = predictor.raw(rgb)
        items.append({"image": str(path), "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                      **compare_image(ref, {"boxes": boxes, "scores": scores, "labels": labels}, min_score, min_iou)})
    n_ref = sum(i["torch_detections"] for i in items)
    n_got = sum(i["onnx_detections"] for i in items)
    n_match = sum(i["matched"] for i in items)
    score_diff = max((i["score_max_abs_diff"] for i in items), default=0.0)
    return {"task": "detect", "framework": "torchvision", "runtime": "onnxruntime", "n_inputs": len(items),
            "max_abs_diff": {"score": score_diff, "box_px": max((i["box_max_abs_diff_px"] for i in items), default=0.0)},
            "agreement": {f"torchvision boxes found by ONNX (IoU>={min_iou}, same class, score>={min_score})":
                          agreement(n_match, n_ref),
                          "ONNX boxes found in torchvision": agreement(n_match, n_got),
                          "images with identical detection counts": agreement(
                              sum(i["torch_detections"] == i["onnx_detections"] for i in items), len(items))},
            "tolerances": {"iou": min_iou, "score": SCORE_TOLERANCE, "min_score_compared": min_score},
            "passed": bool(items) and n_match == n_ref == n_got and score_diff <= SCORE_TOLERANCE,
            "box_agreement": round(n_match / max(n_ref, n_got), 4) if max(n_ref, n_got) else 1.0,
            "items": items}


def check_images(ctx, n: int) -> list[Path]:
    from data_tools.detection.dataset import load_dataset
    from tasks.detect.stages import split_json

    ds = load_dataset(split_json(ctx, "test"))
    paths = [img.path for img in ds.images]
    step = max(1, len(paths) // max(1, n))
    return paths[::step][:n]


def export_torch_stage(ctx) -> None:
    from tasks.detect.onnx_infer import load
    from tasks.detect.ssd import load_trained

    o = ctx.cfg.onnx
    model, ck, ck_path = load_trained(ctx.checkpoints_dir)
    model.to("cpu").eval()
    model.score_thresh = float(ctx.cfg.infer.score_threshold)  # the graph's floor = what infer keeps
    out = ctx.dir(EXPORT_DIR)
    export_onnx(model, out / ONNX_NAME, int(o.opset))
    info = {"backend": "torch", "onnx": ONNX_NAME, "onnxruntime": True, "model": ck["model_name"],
            "checkpoint": str(ck_path), "checkpoint_epoch": ck["epoch"], "classes": list(ck["classes"]),
            "input_size": ck.get("input_size"), "resize": "stretched to input_size x input_size inside the graph "
                                                          "(bilinear, as torchvision); boxes in original pixels",
            "score_floor": float(model.score_thresh), "score_threshold": float(o.score_threshold),
            "opset": int(o.opset), "inputs": {"image": "uint8 [height, width, 3] RGB"},
            "outputs": {"boxes": "float32 [N, 4] x1,y1,x2,y2 px", "scores": "float32 [N]", "labels": "int64 [N] 1..K"}}
    atomic_write_json(out / INFO_NAME, info)
    images = check_images(ctx, int(o.check_images))
    if not images:
        raise HackathonError(f"The test split {ctx.run_dir / 'split' / 'test.json'} has no image to check the export on.",
                             fix="Give the split stage a test fraction > 0 (split.test).")
    predictor = load(ctx.run_dir, prefer_gpu=False)
    check = check_export(model, predictor, images, float(o.check_score), float(o.check_iou))
    check_path = write_check(out, check)
    record_check(ctx, check, {"detect_export_box_agreement": check["box_agreement"],
                              "detect_export_score_max_abs_diff": check["max_abs_diff"]["score"]})
    ctx.record(onnx=str(out / ONNX_NAME), **{k: check[k] for k in ("max_abs_diff", "agreement", "passed")})
    if not check["passed"]:
        raise HackathonError(f"The detector's ONNX export differs from torchvision: {check['agreement']}, "
                             f"max differences {check['max_abs_diff']} (see {check_path}).",
                             fix="Report it with the export_check.json; serve the torch checkpoint meanwhile.")


def collect_tao_stage(ctx) -> None:
    """TAO's exported .onnx -> export/detector.onnx + detector.json (+ a check record saying why not checked)."""
    from tasks.detect.tao_pipeline import _classes, final_weights, input_size, network, results_dir

    model = final_weights(ctx)
    source = results_dir(ctx, "export") / (model.stem + ".onnx")
    if not source.is_file():
        raise HackathonError(f"{source} not found: the tao_export stage wrote no ONNX.",
                             fix="Run `hackathon run detect backend=tao --from tao_export`.")
    out = ctx.dir(EXPORT_DIR)
    with atomic_path(out / ONNX_NAME, suffix=".onnx") as tmp:
        shutil.copyfile(source, tmp)
    atomic_write_json(out / INFO_NAME, {"backend": "tao", "network": network(ctx.cfg), "onnx": ONNX_NAME,
                                        "onnxruntime": False, "note": TAO_NOTE, "source": str(source),
                                        "classes": _classes(), "input_size": list(input_size(ctx.cfg)),
                                        "score_threshold": float(ctx.cfg.onnx.score_threshold)})
    check = {"task": "detect", "framework": f"TAO {network(ctx.cfg)}", "runtime": "TensorRT", "n_inputs": 0,
             "max_abs_diff": {}, "agreement": {}, "tolerances": {}, "passed": None, "notes": [TAO_NOTE], "items": []}
    write_check(out, check)
    record_check(ctx, check, {"detect_export_box_agreement": None})
    ctx.record(onnx=str(out / ONNX_NAME), source=str(source), checked=False, note=TAO_NOTE)
