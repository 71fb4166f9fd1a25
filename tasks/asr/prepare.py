"""Prepare stage: train/val/test NeMo manifests in <run-dir>/data/, transcripts cleaned for char CTC.

`data.source: null` uses the embedded demo corpus (data_tools.speech_synth.ensure_demo_speech, split by
voice so test speakers are unseen). Otherwise the user's folder or manifest goes through the audio
tools (data_tools.prepare_audio: validate, resample, report rejects), then a seeded split by speaker;
a folder that already holds {train,val,test}_manifest.json is used as it is.

Writes data/{train,val,test}_manifest.json and data/summary.json (language, counts, hours, the
characters normalisation removed). Records the data fingerprint, so new data re-runs later stages.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from hackathon.core.atomic import atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.paths import data_sources, user_path
from tasks.asr import vocabulary as vocab_tools

SPLITS = ("train", "val", "test")
DATA_DIR = "data"
SUMMARY_FILE = "data/summary.json"


def manifest_path(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / DATA_DIR / f"{split}_manifest.json"


def source_inputs(ctx) -> list[Path]:
    """External inputs of the prepare stage (for its fingerprint): the user's folder/manifest."""
    return data_sources(ctx.cfg.data.source)


# ---------------------------------------------------------------- sources

def demo_split_manifests(cfg) -> dict[str, Path]:
    from data_tools.speech_synth import ensure_demo_speech

    demo = cfg.data.demo
    root = ensure_demo_speech("asr", seed=int(demo.seed), renditions=int(demo.renditions), noise=bool(demo.noise))
    return {split: root / f"{split}_manifest.json" for split in SPLITS}


def user_split_manifests(ctx) -> dict[str, Path]:
    """The user's folder/manifest -> validated, resampled clips -> train/val/test manifests."""
    from data_tools.prepare_audio import prepare_audio_for_task

    source = user_path(ctx.cfg.data.source)
    if not source.exists():
        raise HackathonError(f"data.source {source} does not exist.",
                             fix="Point data.source at a folder of audio + transcripts or a NeMo manifest, "
                                 "or use data.source=null for the demo.")
    ready = {split: source / f"{split}_manifest.json" for split in SPLITS} if source.is_dir() else {}
    if ready and all(p.is_file() for p in ready.values()):
        ctx.log.info("%s already holds train/val/test manifests: using them as they are", source)
        return ready
    return prepare_audio_for_task(source, ctx.dir(DATA_DIR, "source"), task="asr",
                                  sample_rate=int(ctx.cfg.data.sample_rate), val=float(ctx.cfg.data.split.val),
                                  test=float(ctx.cfg.data.split.test), seed=int(ctx.cfg.seed))


# ---------------------------------------------------------------- stage

def prepare_stage(ctx) -> None:
    from data_tools.manifest import read_manifest, write_manifest

    cfg = ctx.cfg
    sources = demo_split_manifests(cfg) if cfg.data.source is None else user_split_manifests(ctx)
    entries = {split: read_manifest(sources[split]) for split in SPLITS}
    for split in SPLITS:
        if not entries[split]:
            raise HackathonError(f"The {split} split is empty ({sources[split]}).",
                                 fix="Add clips with transcripts to data.source (see its prepare report), or change "
                                     "data.split fractions so that every split gets at least one clip.")
    language = cfg.data.language
    if language == "auto":
        language = vocab_tools.detect_language(e.text for e in entries["train"])
    removed: Counter = Counter()
    summary = {"source": str(cfg.data.source) if cfg.data.source else "demo", "language": language,
               "splits": {}}
    digest = hashlib.sha256()
    for split in SPLITS:
        cleaned = []
        for e in entries[split]:
            text = vocab_tools.normalize_text(e.text, language, lowercase=bool(cfg.data.text.lowercase),
                                              strip_punctuation=bool(cfg.data.text.strip_punctuation))
            removed += vocab_tools.removed_characters(e.text, text)
            if not text:
                ctx.log.warning("%s: transcript %r is empty after clean-up: clip left out", e.audio_filepath, e.text)
                continue
            e.extra = {**e.extra, "text_raw": e.text} if text != e.text else e.extra
            e.text = text
            cleaned.append(e)
        path = write_manifest(manifest_path(ctx.run_dir, split), cleaned)
        digest.update(path.read_bytes())
        summary["splits"][split] = {"n_utts": len(cleaned), "hours": round(sum(e.duration for e in cleaned) / 3600, 4),
                                    "source_manifest": str(sources[split])}
    summary["removed_characters"] = dict(removed.most_common())
    summary["characters"] = vocab_tools.vocabulary_from_texts(e.text for e in read_manifest(manifest_path(ctx.run_dir, "train")))
    atomic_write_json(ctx.path(SUMMARY_FILE), summary)
    ctx.set_data_fingerprint(digest.hexdigest())
    ctx.record(language=language, **{f"n_{s}": summary["splits"][s]["n_utts"] for s in SPLITS})
    if removed:
        ctx.log.info("transcript clean-up removed: %s", dict(removed.most_common(20)))


def read_summary(run_dir: Path) -> dict:
    summary = read_json(Path(run_dir) / SUMMARY_FILE)
    if summary is None:
        raise HackathonError(f"{Path(run_dir) / SUMMARY_FILE} is missing.", fix="Re-run from the prepare stage: --from prepare")
    return summary


def load_split_texts(ctx) -> dict[str, list[str]]:
    from data_tools.manifest import read_manifest

    return {split: [e.text for e in read_manifest(manifest_path(ctx.run_dir, split))] for split in SPLITS}
