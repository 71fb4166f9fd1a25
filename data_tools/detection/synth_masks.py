"""`hackathon data synth-masks`: the embedded face-mask demo dataset, drawn with PIL.

Faces (varied size, skin tone, hair, background clutter, several per image) wearing a mask properly
(with_mask), no mask (without_mask), or a mask below the nose (mask_weared_incorrect), written in the
Kaggle face-mask-detection layout: `images/*.png`... here JPEG to stay small, and `annotations/*.xml` in
PASCAL VOC. The class mix keeps the real data's imbalance (the third class is rare). Deterministic for a
seed: the same seed gives byte-identical files.

Faces are drawn large enough (>= ~50 px in a 320 px image) for SSDlite's smallest anchors, and the three
classes differ in what the detector must learn on real data: nose and mouth visible, both covered, or
nose visible above a mask.
"""

from __future__ import annotations

import random
from pathlib import Path
from xml.sax.saxutils import escape

from hackathon.core.atomic import atomic_path, atomic_write_json, atomic_write_text

CLASS_WEIGHTS = {"with_mask": 0.66, "without_mask": 0.24, "mask_weared_incorrect": 0.10}
SKIN_TONES = [(255, 224, 189), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36), (92, 58, 30)]
HAIR_COLOURS = [(20, 20, 20), (70, 45, 25), (120, 80, 40), (200, 170, 90), (150, 150, 150), (110, 30, 20)]
MASK_COLOURS = [(170, 210, 240), (235, 235, 240), (40, 40, 50), (90, 160, 220), (230, 170, 190), (120, 190, 150)]


def _jitter(colour, rng, amount=18):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def _background(draw, w, h, rng):
    top, bottom = [tuple(rng.randint(40, 230) for _ in range(3)) for _ in range(2)]
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))
    for _ in range(rng.randint(2, 7)):  # clutter so the detector must look at faces, not at "anything"
        x, y = rng.randint(0, w), rng.randint(0, h)
        s = rng.randint(10, 60)
        colour = tuple(rng.randint(30, 240) for _ in range(3))
        if rng.random() < 0.5:
            draw.rectangle([x, y, x + s, y + rng.randint(10, 60)], fill=colour)
        else:
            draw.ellipse([x, y, x + s, y + s], fill=colour)


def _face(draw, x, y, fw, fh, label, rng):
    """Draw one face whose bounding box is (x, y, x+fw, y+fh)."""
    skin = _jitter(rng.choice(SKIN_TONES), rng, 10)
    hair = rng.choice(HAIR_COLOURS)
    # hair behind/above the head, inside the box top
    draw.ellipse([x, y, x + fw, y + fh * 0.7], fill=hair)
    draw.ellipse([x + fw * 0.06, y + fh * 0.12, x + fw * 0.94, y + fh], fill=skin)
    # eyes
    eye_y = y + fh * 0.42
    eye_r = max(2, fw * 0.06)
    for ex in (x + fw * 0.33, x + fw * 0.67):
        draw.ellipse([ex - eye_r * 1.4, eye_y - eye_r, ex + eye_r * 1.4, eye_y + eye_r], fill=(250, 250, 250))
        draw.ellipse([ex - eye_r * 0.7, eye_y - eye_r * 0.7, ex + eye_r * 0.7, eye_y + eye_r * 0.7], fill=(30, 30, 40))
        draw.line([ex - eye_r * 1.6, eye_y - eye_r * 2.2, ex + eye_r * 1.6, eye_y - eye_r * 2.4], fill=hair,
                  width=max(1, int(fw * 0.03)))
    # nose: a dark triangle, mouth: red ellipse
    nose_col = tuple(int(c * 0.7) for c in skin)
    cx = x + fw / 2
    draw.polygon([(cx, y + fh * 0.48), (cx - fw * 0.08, y + fh * 0.64), (cx + fw * 0.08, y + fh * 0.64)], fill=nose_col)
    draw.ellipse([cx - fw * 0.17, y + fh * 0.72, cx + fw * 0.17, y + fh * 0.82], fill=(170, 40, 50))
    if label == "without_mask":
        return
    # mask: properly worn covers from just under the eyes; below the nose it starts under the nostrils
    top = y + fh * (0.53 if label == "with_mask" else 0.67)
    bottom = y + fh * (0.95 if label == "with_mask" else 0.99)
    colour = _jitter(rng.choice(MASK_COLOURS), rng, 10)
    left, right = x + fw * 0.12, x + fw * 0.88
    draw.rounded_rectangle([left, top, right, bottom], radius=max(2, int(fw * 0.1)), fill=colour)
    pleat = tuple(int(c * 0.8) for c in colour)
    for k in (1, 2, 3):
        py = top + (bottom - top) * k / 4
        draw.line([left + 3, py, right - 3, py], fill=pleat, width=1)
    loop = (235, 235, 235) if sum(colour) < 300 else (120, 120, 120)
    draw.line([left, top + 3, x + fw * 0.02, y + fh * 0.45], fill=loop, width=max(1, int(fw * 0.025)))
    draw.line([right, top + 3, x + fw * 0.98, y + fh * 0.45], fill=loop, width=max(1, int(fw * 0.025)))


def _place_faces(w, h, rng, max_faces):
    """Non-overlapping face boxes of varied size."""
    boxes = []
    for _ in range(rng.randint(1, max_faces) * 6):
        if len(boxes) >= max_faces:
            break
        fw = rng.randint(int(min(w, h) * 0.18), int(min(w, h) * 0.42))
        fh = int(fw * rng.uniform(1.15, 1.3))
        if fw >= w - 4 or fh >= h - 4:
            continue
        x, y = rng.randint(2, w - fw - 2), rng.randint(2, h - fh - 2)
        cand = (x, y, x + fw, y + fh)
        if all(cand[2] + 4 < b[0] or b[2] + 4 < cand[0] or cand[3] + 4 < b[1] or b[3] + 4 < cand[1] for b in boxes):
            boxes.append(cand)
    return boxes


def voc_xml(filename: str, width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    """PASCAL VOC annotation text in the Kaggle face-mask-detection style."""
    parts = ["<annotation>", "    <folder>images</folder>", f"    <filename>{escape(filename)}</filename>",
             "    <size>", f"        <width>{width}</width>", f"        <height>{height}</height>",
             "        <depth>3</depth>", "    </size>", "    <segmented>0</segmented>"]
    for name, (x1, y1, x2, y2) in objects:
        parts += ["    <object>", f"        <name>{escape(name)}</name>", "        <pose>Unspecified</pose>",
                  "        <truncated>0</truncated>", "        <occluded>0</occluded>", "        <difficult>0</difficult>",
                  "        <bndbox>", f"            <xmin>{x1}</xmin>", f"            <ymin>{y1}</ymin>",
                  f"            <xmax>{x2}</xmax>", f"            <ymax>{y2}</ymax>", "        </bndbox>", "    </object>"]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def draw_image(rng: random.Random, width: int, height: int, max_faces: int):
    """One demo image and its [(label, box)] list."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    _background(draw, width, height, rng)
    objects = []
    labels, weights = zip(*CLASS_WEIGHTS.items())
    for box in _place_faces(width, height, rng, max_faces):
        label = rng.choices(labels, weights)[0]
        _face(draw, box[0], box[1], box[2] - box[0], box[3] - box[1], label, rng)
        objects.append((label, box))
    return img, objects


def synth_masks(out_dir: str | Path, num_images: int = 600, seed: int = 0, image_size: int = 320,
                max_faces: int = 4) -> Path:
    """Write the demo dataset to out_dir (images/, annotations/, synth.json); return out_dir.

    Image sizes vary around `image_size` (0.8x..1.25x per side) so resizing paths get exercised.
    An existing complete dataset with the same parameters is reused (the generation is deterministic).
    """
    out = Path(out_dir)
    params = {"num_images": num_images, "seed": seed, "image_size": image_size, "max_faces": max_faces, "version": 1}
    marker = out / "synth.json"
    from hackathon.core.atomic import read_json

    if read_json(marker) == params:
        return out
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        rng = random.Random(f"{seed}-{i}")  # per-image stream: image i is the same whatever num_images is
        w = int(image_size * rng.uniform(0.8, 1.25))
        h = int(image_size * rng.uniform(0.8, 1.25))
        img, objects = draw_image(rng, w, h, max_faces)
        name = f"synthmask{i:05d}.jpg"
        with atomic_path(out / "images" / name) as tmp:
            img.save(tmp, format="JPEG", quality=92)
        atomic_write_text(out / "annotations" / f"synthmask{i:05d}.xml", voc_xml(name, w, h, objects))
    atomic_write_json(marker, params)
    return out
