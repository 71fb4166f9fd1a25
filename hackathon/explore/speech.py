"""Speech explorer data: utterance rows, totals, alphabet/vocabulary, OOV, histograms, predictions, TTS scores.

Inputs are ASR run dirs (data/*_manifest.json + predictions.jsonl + model/vocabulary.json), TTS run dirs
(data/<split>.json + synth/index.jsonl + eval/scores.jsonl) or NeMo manifests. Everything here is plain
Python over JSON; the per-row character diff is drawn by the page (speech.js), on demand.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from hackathon.core.atomic import read_json, read_jsonl
from hackathon.core.errors import HackathonError

SPLITS = ("train", "val", "test")


def _manifest_rows(path: Path, split: str | None) -> list[dict]:
    from data_tools.manifest import read_manifest

    return [{"audio": e.audio_filepath, "duration": float(e.duration), "text": e.text,
             "speaker": str(getattr(e, "speaker", None) or ""), "split": split or "", "source": str(path)}
            for e in read_manifest(path)]


def is_speech_run(path: Path) -> bool:
    return path.is_dir() and (path / "meta.json").is_file() and (
        any((path / "data" / f"{s}_manifest.json").is_file() for s in SPLITS)
        or any((path / "data" / f"{s}.json").is_file() for s in SPLITS))


def read_run(run_dir: Path) -> tuple[list[dict], dict]:
    """(rows of every split, extras: predictions by audio path, vocabulary, tts scores)."""
    rows: list[dict] = []
    for split in SPLITS:
        for name in (f"{split}_manifest.json", f"{split}.json"):
            p = run_dir / "data" / name
            if p.is_file():
                rows += _manifest_rows(p, split)
                break
    extras: dict = {"predictions": predictions_by_audio(run_dir), "tts": {},
                    "vocabulary": read_json(run_dir / "model" / "vocabulary.json", default={}).get("vocabulary")}
    index = read_jsonl(run_dir / "synth" / "index.jsonl", missing_ok=True)
    scores = {r["id"]: r for r in read_jsonl(run_dir / "eval" / "scores.jsonl", missing_ok=True)}
    for item in index:  # TTS: synthesized vs recorded, keyed by the reference recording
        s = scores.get(item["id"], {})
        extras["tts"][str(Path(item["reference"]).resolve())] = {
            "synth": str(run_dir / item["synth"]), "copy": str(run_dir / item["copy"]),
            "dnsmos": (s.get("dnsmos") or {}).get("ovrl"), "ref_dnsmos": (s.get("ref_dnsmos") or {}).get("ovrl"),
            "pesq": s.get("pesq_wb")}
    return rows, extras


def predictions_by_audio(run_dir: Path) -> dict[str, dict]:
    """An ASR run's predictions.jsonl keyed by resolved audio path: {pred, cer, wer}."""
    out = {}
    for p in read_jsonl(run_dir / "predictions.jsonl", missing_ok=True):
        if "pred_text" not in p:
            continue
        wer = p["word_errors"] / p["ref_words"] if p.get("ref_words") else None
        out[str(Path(p["audio_filepath"]).resolve())] = {"pred": p["pred_text"], "cer": round(float(p["cer"]), 4),
                                                         "wer": None if wer is None else round(wer, 4)}
    return out


def _units(text: str) -> list[str]:
    """Vocabulary units: space-separated words when the text has spaces, else characters (Chinese)."""
    return text.split() if " " in text.strip() else [c for c in text if not c.isspace()]


def _histogram(values: list[float], bins: int = 30) -> dict:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges": [round(lo + i * width, 4) for i in range(bins + 1)], "counts": counts}


def _outlier_range(values: list[float], k: float = 3.0) -> tuple[float, float]:
    """median +- k * 1.4826 * MAD (robust: one broken clip does not move it)."""
    if len(values) < 4:
        return float("-inf"), float("inf")
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values) * 1.4826 or (0.05 * med) or 1e-9
    return med - k * mad, med + k * mad


def speech_data(inputs: list[Path], compare: Path | None) -> dict:
    """The page's data: {kind, totals, alphabet, vocabulary, oov, histograms, rows, columns}."""
    rows: list[dict] = []
    preds: dict = {}
    vocabulary = None
    tts: dict = {}
    sources = []
    for path in inputs:
        if path.is_dir():
            if not is_speech_run(path):
                raise HackathonError(f"{path} is not an ASR/TTS run directory (no data/<split>_manifest.json).",
                                     fix="Pass a run dir under runs/asr or runs/tts, or a NeMo manifest file.")
            r, extras = read_run(path)
            rows += r
            preds.update(extras["predictions"])
            vocabulary = vocabulary or extras["vocabulary"]
            tts.update(extras["tts"])
        else:
            rows += _manifest_rows(path, None)
        sources.append(str(path))
    if not rows:
        raise HackathonError(f"No utterances in {', '.join(map(str, inputs))}.", fix="Check that the manifests have lines.")
    compare_preds = predictions_by_audio(compare) if compare else {}
    if compare and not compare_preds:
        raise HackathonError(f"{compare} has no predictions.jsonl.", fix="--compare takes an ASR run dir that finished evaluate.")

    chars: Counter = Counter()
    units: Counter = Counter()
    for i, r in enumerate(rows):
        r["id"] = i
        key = str(Path(r["audio"]).resolve())
        r["chars"] = len([c for c in r["text"] if not c.isspace()])
        r["cps"] = round(r["chars"] / r["duration"], 3) if r["duration"] > 0 else None
        chars.update(c for c in r["text"] if not c.isspace())
        units.update(_units(r["text"]))
        if key in preds:
            r["pred"] = preds[key]
        if key in compare_preds:
            r["pred2"] = compare_preds[key]
        if key in tts:
            r["tts"] = tts[key]
    durations = [r["duration"] for r in rows]
    cps = [r["cps"] for r in rows if r["cps"] is not None]
    d_lo, d_hi = _outlier_range(durations)
    c_lo, c_hi = _outlier_range(cps)
    for r in rows:
        flags = {"duration": not d_lo <= r["duration"] <= d_hi,
                 "chars/s": r["cps"] is not None and not c_lo <= r["cps"] <= c_hi,
                 "empty": r["duration"] <= 0 or not r["text"].strip()}
        r["outlier"] = ", ".join(name for name, flagged in flags.items() if flagged)
    oov = None
    if vocabulary:
        vocab = set(vocabulary)
        oov = sorted(([c, n] for c, n in chars.items() if c not in vocab), key=lambda x: -x[1])
    return {
        "kind": "speech",
        "sources": sources,
        "compare": str(compare) if compare else None,
        "totals": {"utterances": len(rows), "hours": round(sum(durations) / 3600, 4),
                   "speakers": len({r["speaker"] for r in rows if r["speaker"]}),
                   "splits": dict(Counter(r["split"] or "-" for r in rows)),
                   "with_predictions": sum(1 for r in rows if "pred" in r),
                   "outliers": sum(1 for r in rows if r["outlier"])},
        "alphabet": sorted(([c, n] for c, n in chars.items()), key=lambda x: -x[1]),
        "vocabulary": sorted(([u, n] for u, n in units.items()), key=lambda x: -x[1])[:2000],
        "vocabulary_size": len(units),
        "oov": oov,
        "histograms": {"duration": {**_histogram(durations), "outside": [round(d_lo, 3), round(d_hi, 3)]},
                       "chars_per_second": {**_histogram(cps), "outside": [round(c_lo, 3), round(c_hi, 3)]}},
        "rows": rows,
    }
