"""Evaluate stage (transcribe the held-out test split with model/trained.nemo) and score stage.

Metrics (metrics.json, flat keys):
- cer: character error rate = character edits / reference characters (spaces count for space-delimited
  languages; Chinese transcripts have none).
- wer: for Chinese, WER on space-separated characters (each hanzi is a "word", so it equals the CER);
  otherwise the usual word error rate. `wer_unit` says which ("character" or "word").
- n_utts (test utterances scored), n_failed (clips that could not be read; listed in predictions.jsonl).

Also: predictions.jsonl (one line per utterance: reference, prediction, edits), report_assets.json
(worst utterances with their audio, per-speaker table, OOV table).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

from hackathon.core.atomic import atomic_path, atomic_write_jsonl, read_jsonl
from hackathon.core.report import add_report_assets
from hackathon.core.text import corpus_rate, edit_distance, error_rate
from tasks.asr.model import read_vocabulary_report, restore_model
from tasks.asr.prepare import manifest_path, read_summary
from tasks.asr.train import TRAINED_MODEL

PREDICTIONS_FILE = "predictions.jsonl"
WORST_AUDIO_DIR = "report/worst"


def word_units(text: str, language: str) -> list[str]:
    """Chinese: every character is a unit (WER on space-separated characters); else words."""
    if language == "zh":
        return [ch for ch in text if not ch.isspace()]
    return text.split()


def score_utterance(ref: str, hyp: str, language: str) -> dict:
    ref_words, hyp_words = word_units(ref, language), word_units(hyp, language)
    return {"char_errors": edit_distance(ref, hyp), "ref_chars": len(ref),
            "word_errors": edit_distance(ref_words, hyp_words), "ref_words": len(ref_words)}


def aggregate(rows: list[dict]) -> dict:
    return {"cer": corpus_rate(rows, "char_errors", "ref_chars"), "wer": corpus_rate(rows, "word_errors", "ref_words")}


def score_predictions(items: list[dict], language: str) -> list[dict]:
    rows = []
    for item in items:
        s = score_utterance(item["text"], item["pred_text"], language)
        rows.append({**item, **s, "cer": error_rate(s["char_errors"], s["ref_chars"])})
    return rows


def per_speaker(rows: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[str(r.get("speaker") or "unknown")].append(r)
    return [{"speaker": spk, "n_utts": len(g), **{k: round(v, 4) for k, v in aggregate(g).items() if v is not None}}
            for spk, g in sorted(groups.items())]


def copy_worst_audio(ctx, worst: list[dict]) -> list[dict]:
    """Worst clips are copied into the run dir, so the report plays them after the demo cache is gone."""
    audio = []
    for i, r in enumerate(worst):
        src = Path(r["audio_filepath"])
        dst = ctx.path(WORST_AUDIO_DIR, f"{i:02d}_{src.stem}{src.suffix}")
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        audio.append({"path": str(dst.relative_to(ctx.run_dir)), "text": r["text"],
                      "caption": f"CER {r['cer']:.3f} — said: {r['text']} — heard: {r['pred_text'] or '(nothing)'}"})
    return audio


def evaluate_stage(ctx) -> None:
    """Transcribe the test split with the trained model; one scored line per utterance in predictions.jsonl."""
    from data_tools.manifest import read_manifest
    from tasks.asr.transcribe import transcribe_items

    language = read_summary(ctx.run_dir)["language"]
    entries = read_manifest(manifest_path(ctx.run_dir, "test"))
    items = [{"audio_filepath": e.audio_filepath, "text": e.text, "speaker": e.speaker} for e in entries]
    model = restore_model(ctx.run_dir / TRAINED_MODEL)
    results, failed = transcribe_items(model, items, int(ctx.cfg.evaluate.batch_size))
    rows = score_predictions(results, language)
    if not rows:
        from hackathon.core.errors import HackathonError

        raise HackathonError(f"None of the {len(items)} test clips could be transcribed "
                             f"(first error: {failed[0]['error'] if failed else 'no test clips'}).",
                             fix=f"Check the audio files listed in {manifest_path(ctx.run_dir, 'test')}.")
    atomic_write_jsonl(ctx.path(PREDICTIONS_FILE), rows + [{**f, "pred_text": None} for f in failed])


def read_predictions(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(scored utterances, clips that could not be transcribed) from predictions.jsonl."""
    all_rows = read_jsonl(run_dir / PREDICTIONS_FILE)
    return [r for r in all_rows if r.get("pred_text") is not None], [r for r in all_rows if r.get("pred_text") is None]


def backend_name(ctx) -> str:
    return str(ctx.cfg.get("backend", "nemo"))


def backends_on_same_data(ctx, cer: float) -> list[dict]:
    """This run's CER beside the best registered run of each ASR backend on the same data fingerprint."""
    from hackathon.core.registry import backend_comparison, list_runs

    fp = ctx.meta.get("data_fingerprint")
    if not fp:
        return []
    try:
        runs = list_runs(task="asr")
    except Exception as exc:  # the registry is a team service: the score never fails on it
        ctx.log.warning("registry not readable, backend comparison left out: %s", exc)
        runs = []
    this = {"task": "asr", "run_dir": str(ctx.run_dir), "data_fingerprint": fp,
            "metrics": {**ctx.read_metrics(), "cer": cer, "backend": backend_name(ctx)}}
    return backend_comparison([r for r in runs if r["run_dir"] != str(ctx.run_dir)] + [this], data_fingerprint=fp)


def score_stage(ctx) -> None:
    """The competition score (CER) and the report's pictures, from predictions.jsonl: re-scoring never
    re-transcribes."""
    language = read_summary(ctx.run_dir)["language"]
    rows, failed = read_predictions(ctx.run_dir)
    totals = aggregate(rows)
    wer_unit = "character" if language == "zh" else "word"
    worst = sorted((r for r in rows if r["char_errors"]), key=lambda r: (-r["cer"], r["audio_filepath"]))
    worst = worst[: int(ctx.cfg.evaluate.worst_n)]
    oov = read_vocabulary_report(ctx.run_dir)["oov"]
    assets = {
        "images": [],
        "audio": copy_worst_audio(ctx, worst),
        "tables": [
            {"title": "Test scores", "rows": [{"cer": round(totals["cer"], 4), "wer": round(totals["wer"], 4),
                                               "wer_unit": wer_unit, "n_utts": len(rows), "n_failed": len(failed)}]},
            {"title": "Worst test utterances", "rows": [
                {"audio": Path(r["audio_filepath"]).name, "reference": r["text"], "prediction": r["pred_text"],
                 "cer": round(r["cer"], 3)} for r in worst]},
            {"title": "CER by test speaker", "rows": per_speaker(rows)},
            {"title": "ASR backends on the same data (best CER each)", "rows": backends_on_same_data(ctx, totals["cer"])},
            {"title": "Characters the model cannot output (counted as errors)", "rows": [
                {"split": split, "characters": "".join(rep["characters"]), "occurrences": rep["n_chars"],
                 "utterances": rep["n_utts_affected"]} for split, rep in oov.items() if rep["n_chars"]]},
        ],
    }
    headline = [{"key": "cer", "label": "CER", "better": "lower"},
                {"key": "wer", "label": f"WER ({wer_unit}s)", "better": "lower"}, {"key": "n_utts", "label": "test utterances"}]
    add_report_assets(ctx.run_dir, stage="score", headline=headline, **assets)  # the export stage's parity table stays
    ctx.write_metrics({"backend": backend_name(ctx), "cer": totals["cer"], "wer": totals["wer"], "wer_unit": wer_unit,
                       "n_utts": len(rows), "n_failed": len(failed), "language": language})
    ctx.record(cer=totals["cer"], wer=totals["wer"], n_utts=len(rows), n_failed=len(failed))
    ctx.log.info("test CER %.4f, WER %.4f (%s units) on %d utterances", totals["cer"], totals["wer"], wer_unit, len(rows))
