"""YOLOv3 k-means anchors (IoU distance) at the spec's input size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hackathon.core.errors import HackathonError
from tasks.detect import tao_anchors


def test_kmeans_finds_planted_box_shapes():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 12], [20, 18], [30, 40], [50, 45], [70, 90], [100, 80], [140, 150], [200, 180], [300, 260]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, size=(60, 2)) for c in centres])
    anchors = tao_anchors.kmeans_iou(wh, k=9, seed=1)
    areas = anchors[:, 0] * anchors[:, 1]
    assert np.all(np.diff(areas) > 0), "anchors sorted by area"
    assert np.allclose(anchors, centres, rtol=0.08)
    assert tao_anchors.mean_iou(wh, anchors) > 0.85
    shapes = tao_anchors.anchor_shapes(anchors)
    assert shapes["small_anchor_shape"].startswith("[(") and shapes["big_anchor_shape"].count("(") == 3


def test_boxes_are_scaled_to_the_input_size(tmp_path):
    labels, images = tmp_path / "labels", tmp_path / "images"
    labels.mkdir()
    images.mkdir()
    Image.new("RGB", (200, 100)).save(images / "a.png")
    (labels / "a.txt").write_text("with_mask 0.00 0 0.00 10.00 10.00 30.00 30.00 0 0 0 0 0 0 0\n")
    wh = tao_anchors.kitti_boxes_wh(labels, images, 400, 400)
    assert wh.tolist() == [[40.0, 80.0]]  # x2 wide, x4 high


def test_too_few_boxes_is_a_clear_error():
    with pytest.raises(HackathonError, match="at least 9"):
        tao_anchors.kmeans_iou(np.ones((3, 2)))
