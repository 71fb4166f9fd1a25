"""prepare: recordings -> clean clips at data.sample_rate (22.05 or 44.1 kHz) -> phrase-split training samples -> data/{train,val,test}.json.

Source (`data.source`):
- null: the generated one-voice demo speech (data_tools.speech_synth; test/val names never occur in train);
- a folder holding train_manifest.json, val_manifest.json, test_manifest.json: those splits as given;
- any other folder of audio + transcripts, or one NeMo manifest: prepare-audio, then a seeded split.

Every split goes through data_tools.prepare_audio (validate, resample to data.sample_rate, TTS cleaning:
trim edge silence, loudness-normalise, flag noisy clips); rejected clips are listed in
data/<split>/report.json and the run goes on. Training clips are then phrase-split (data_tools.phrase_split):
whole sentence + one clip per phrase, so names and greetings are also learned as separate samples.
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.errors import HackathonError
from hackathon.core.paths import user_path

SPLITS = ("train", "val", "test")


def given_split_manifests(cfg) -> dict[str, Path] | None:
    """{split: manifest} when the source already comes split (the demo, or a folder with the 3 manifests)."""
    if cfg.data.source is None:
        from data_tools.speech_synth import ensure_demo_speech

        root = ensure_demo_speech("tts", seed=int(cfg.data.demo_seed))
    else:
        root = user_path(cfg.data.source)
        if not root.exists():
            raise HackathonError(f"data.source {root} does not exist.",
                                 fix="Point data.source at a folder of recordings + transcripts, a NeMo manifest, "
                                     "or a folder with train/val/test_manifest.json; data.source=null = demo.")
    found = {s: root / f"{s}_manifest.json" for s in SPLITS}
    return found if root.is_dir() and all(p.is_file() for p in found.values()) else None


def clean_split(manifest: Path, out_dir: Path, cfg) -> Path:
    """prepare-audio on one split: converted + cleaned clips and a report of the rejected ones."""
    from data_tools.prepare_audio import prepare_audio

    result = prepare_audio(manifest, out_dir, task="tts", sample_rate=int(cfg.data.sample_rate),
                           clean=bool(cfg.data.clean), min_duration=0.1, max_duration=float(cfg.data.max_duration))
    if result.accepted == 0:
        raise HackathonError(f"{manifest}: no usable clip (all rejected)", fix=f"See {result.report_path}.")
    return result.manifest_path


def prepared_splits(ctx) -> dict[str, Path]:
    cfg = ctx.cfg
    given = given_split_manifests(cfg)
    if given is not None:
        return {split: clean_split(path, ctx.dir("data", split), cfg) for split, path in given.items()}
    from data_tools.prepare_audio import prepare_audio_for_task

    return prepare_audio_for_task(user_path(cfg.data.source), ctx.dir("data", "source"), task="tts",
                                  sample_rate=int(cfg.data.sample_rate), clean=bool(cfg.data.clean),
                                  seed=int(cfg.data.demo_seed))


def prepare_stage(ctx) -> None:
    from data_tools.manifest import read_manifest, write_manifest
    from hackathon.core.fingerprint import combine, path_fingerprint
    from tasks.tts.model_config import check_sample_rates

    check_sample_rates(ctx.cfg)  # data / FastPitch / HiFiGAN rates and mels agree, before any work
    splits = prepared_splits(ctx)
    counts, left_whole = {}, 0
    for split in SPLITS:
        manifest = Path(splits[split])
        if split == "train" and ctx.cfg.data.phrase_split:
            from data_tools.phrase_split import phrase_split

            result = phrase_split(manifest, ctx.dir("data", "phrases"))
            manifest, left_whole = result.manifest_path, len(result.left_whole)
            if left_whole:
                ctx.log.warning("phrase-split left %d training clip(s) whole (pauses did not match the punctuation):"
                                " see %s", left_whole, result.report_path)
        entries = read_manifest(manifest)
        if not entries:
            raise HackathonError(f"{manifest}: no {split} clip left after preparation", fix=f"Add {split} clips.")
        write_manifest(ctx.path("data", f"{split}.json"), entries)
        counts[split] = len(entries)
    ctx.set_data_fingerprint(combine(*(path_fingerprint(ctx.path("data", f"{s}.json"), content=True) for s in SPLITS)))
    ctx.record(source=str(ctx.cfg.data.source or "demo"), clips=counts, phrase_split_left_whole=left_whole)
