"""In-process mask detection from a run's ONNX export: what the export check measures and what
`hackathon serve` runs.

Reads only <run>/export/detector.onnx and <run>/export/detector.json (written by tasks/detect/export_model.py).
The torch backend's graph takes one RGB image as uint8 [H, W, 3] of any size and does everything
torchvision's SSD does inside: resize to the training input size, normalise, backbone + head, box decoding,
per-class NMS, and scaling the boxes back to the original pixels. So the predictor only decodes the image.
The TAO backend's ONNX needs TensorRT plugins (NMS) that onnxruntime lacks: it is collected for Triton /
TensorRT and refused here with that reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hackathon.core.errors import HackathonError

EXPORT_DIR = "export"
ONNX_NAME = "detector.onnx"
INFO_NAME = "detector.json"
EXPORT_FIX = "Run `hackathon run detect --only export_model` on that run dir (backend=torch), or pick a finished detect run."


def to_rgb_array(image) -> np.ndarray:
    """PIL image or array -> contiguous RGB uint8 [H, W, 3] (EXIF orientation applied for PIL images)."""
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise HackathonError(f"image must be RGB [height, width, 3], got shape {array.shape}.",
                             fix="Pass a PIL image or an RGB uint8 array.")
    if array.dtype != np.uint8:
        raise HackathonError(f"image must be uint8 (0-255), got {array.dtype}.", fix="Convert with np.uint8 / PIL.")
    if min(array.shape[:2]) < 2:
        raise HackathonError(f"image is {array.shape[1]}x{array.shape[0]} px: too small to detect anything.",
                             fix="Send a real photo.")
    return np.ascontiguousarray(array[:, :, :3])


class DetectPredictor:
    """`detect(image) -> (boxes [N,4] x1,y1,x2,y2 original pixels, scores [N], labels [N] class names)`."""

    def __init__(self, export_dir: Path, session, info: dict):
        self.export_dir = export_dir
        self.session = session
        self.info = info
        self.classes: list[str] = list(info["classes"])
        self.score_threshold = float(info["score_threshold"])
        self._input = session.get_inputs()[0].name

    def raw(self, image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every detection the graph keeps (score above the export's floor): boxes, scores, class ids 1..K."""
        boxes, scores, labels = self.session.run(None, {self._input: to_rgb_array(image)})[:3]
        return boxes.astype(np.float32), scores.astype(np.float32), labels.astype(np.int64)

    def detect(self, image, score_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        boxes, scores, labels = self.raw(image)
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        keep = scores >= threshold
        order = np.argsort(-scores[keep], kind="stable")
        return (boxes[keep][order].reshape(-1, 4), scores[keep][order],
                [self.classes[int(i) - 1] for i in labels[keep][order]])


def load(run_dir: str | Path, prefer_gpu: bool = True) -> DetectPredictor:
    """The predictor of a detect run dir (reads <run>/export/detector.* only)."""
    from hackathon.core.atomic import read_json
    from hackathon.core.onnx_session import create_session

    export_dir = Path(run_dir) / EXPORT_DIR
    info = read_json(export_dir / INFO_NAME)
    if info is None:
        raise HackathonError(f"{export_dir / INFO_NAME} not found: {run_dir} has no detector ONNX export.", fix=EXPORT_FIX)
    if not info.get("onnxruntime", True):
        raise HackathonError(f"{export_dir / info['onnx']} is a TAO export: {info.get('note', 'it needs TensorRT plugins')}",
                             fix="Serve it with Triton's TensorRT backend (`hackathon deploy triton-repo`) on a GPU, "
                                 "or serve a backend=torch run here.")
    session = create_session(export_dir / ONNX_NAME, EXPORT_FIX, prefer_gpu=prefer_gpu)
    return DetectPredictor(export_dir, session, info)
