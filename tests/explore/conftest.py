"""Explorer fixtures: a small ASR run dir with real espeak audio and a detect run dir with real demo images,
each with predictions whose errors are known; and a headless Debian chromium driven by Playwright."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
SUBSTITUTED = "大"  # the test split's first utterance gets this character replaced in its prediction
REPLACEMENT = "太"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="session")
def asr_run(tmp_path_factory) -> Path:
    """runs/asr/<x>: data/<split>_manifest.json (espeak demo speech), model/vocabulary.json and a
    predictions.jsonl scored by the evaluate stage's own scorer: one substitution, one deletion, rest exact."""
    from data_tools.manifest import read_manifest
    from data_tools.speech_synth import synth_speech
    from tasks.asr.evaluate import score_predictions

    base = tmp_path_factory.mktemp("explore-asr")
    corpus = synth_speech("asr", base / "corpus", renditions=1, noise=False)
    run = base / "run"
    chars = set()
    for split, manifest in corpus["manifests"].items():
        entries = [e.to_dict() for e in read_manifest(manifest)]
        _write_jsonl(run / "data" / f"{split}_manifest.json", entries)
        chars |= {c for e in entries for c in e["text"]}
    test = [e.to_dict() for e in read_manifest(corpus["manifests"]["test"])]
    items = []
    for i, e in enumerate(test):
        pred = e["text"]
        if i == 0:
            assert SUBSTITUTED in pred, pred
            pred = pred.replace(SUBSTITUTED, REPLACEMENT, 1)
        elif i == 1:
            pred = pred[:-2]  # two deletions: the worst CER
        items.append({**e, "pred_text": pred})
    _write_jsonl(run / "predictions.jsonl", score_predictions(items, "zh"))
    vocab = sorted(chars - {"门"})  # one character the "model" lacks: shows up as OOV
    (run / "model").mkdir(parents=True)
    (run / "model" / "vocabulary.json").write_text(json.dumps({"vocabulary": vocab}), encoding="utf-8")
    (run / "meta.json").write_text(json.dumps({"task": "asr"}), encoding="utf-8")
    return run


@pytest.fixture(scope="session")
def detect_run(tmp_path_factory) -> Path:
    """runs/detect/<x>: the demo masks ingested (data/dataset.json), split/test.json = all of it, and
    predictions/test.json = the ground truth with a known false positive, a miss and a wrong class."""
    from data_tools.detection.ingest import ingest
    from data_tools.detection.synth_masks import synth_masks

    base = tmp_path_factory.mktemp("explore-detect")
    src = synth_masks(base / "synth", num_images=12, seed=3, image_size=200)
    run = base / "run"
    ds_json, _ = ingest([src], run / "data")
    coco = json.loads(Path(ds_json).read_text())
    for im in coco["images"]:
        im["file_name"] = str((Path(ds_json).parent / im["file_name"]).resolve())
    (run / "split").mkdir()
    (run / "split" / "test.json").write_text(json.dumps(coco))
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
             for a in coco["annotations"]]
    first = preds[0]
    preds[1]["category_id"] = 1 + preds[1]["category_id"] % len(coco["categories"])  # wrong class
    preds.pop(2)  # a miss
    preds.append({**first, "bbox": [1, 1, 12, 12], "score": 0.8})  # a false positive
    (run / "predictions").mkdir()
    (run / "predictions" / "test.json").write_text(json.dumps(preds))
    (run / "meta.json").write_text(json.dumps({"task": "detect"}))
    return run


@pytest.fixture(scope="package")  # closed after tests/explore: a live sync Playwright blocks the next one (gate page)
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (make setup installs Debian's chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    yield pg
    ctx.close()
