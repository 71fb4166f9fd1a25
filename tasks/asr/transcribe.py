"""Batch transcription: `hackathon asr transcribe MODEL FILES...|MANIFEST`.

MODEL: a NeMo .nemo file, or a whisper_lora export folder (export/ct2 through faster-whisper, or
export/merged in transformers format; tasks/asr/whisper_lora/decode.py: WhisperTranscriber).

Any audio format data_tools.audio can read (wav/flac/ogg natively, mp3/m4a/... through ffmpeg), any
rate or channel count: clips are decoded, down-mixed and resampled to the model's rate in memory, then
transcribed in batches. A file that cannot be read is listed in the result's `failed` and the rest of
the batch goes on. The evaluate stage uses the same functions, so scores match what users get.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

from hackathon.core.atomic import atomic_write_jsonl
from hackathon.core.errors import HackathonError
from hackathon.core.progress import bar

MANIFEST_SUFFIXES = (".json", ".jsonl")


def expand_inputs(inputs: Sequence[str | Path]) -> list[dict]:
    """Files, folders (audio files inside, sorted) and NeMo manifests -> [{audio_filepath, text?}]."""
    from data_tools.manifest import read_manifest

    items: list[dict] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            items += [{"audio_filepath": e.audio_filepath, "text": e.text} for e in read_manifest(path)]
        elif path.is_dir():
            items += [{"audio_filepath": str(p)} for p in sorted(path.rglob("*")) if p.is_file()
                      and p.suffix.lower() in (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus", ".webm")]
        else:
            items.append({"audio_filepath": str(path)})
    return items


def model_sample_rate(model) -> int:
    if hasattr(model, "transcribe_clips"):  # a Whisper export
        return int(model.sample_rate)
    return int(model.cfg.get("sample_rate") or model.preprocessor._sample_rate)


def load_clip(path: str, sample_rate: int):
    """Mono float32 at `sample_rate`, or HackathonError naming the file."""
    from data_tools.audio import read_audio, resample, to_mono

    audio, sr = read_audio(path)
    audio = to_mono(audio)
    if len(audio) == 0:
        raise HackathonError(f"{path}: no audio samples", fix="Re-record or re-export the clip.")
    return resample(audio, sr, sample_rate).astype("float32")


def transcribe_arrays(model, clips: list, batch_size: int) -> list[str]:
    """Greedy CTC text for each clip (numpy arrays at the model's rate)."""
    import torch

    if not clips:
        return []
    if hasattr(model, "transcribe_clips"):
        return model.transcribe_clips(clips, batch_size)
    model.eval()
    with torch.inference_mode():
        hyps = model.transcribe(clips, batch_size=batch_size, verbose=False)
    if isinstance(hyps, tuple):  # some NeMo models return (best, all)
        hyps = hyps[0]
    return [h.text if hasattr(h, "text") else str(h) for h in hyps]


def transcribe_items(model, items: list[dict], batch_size: int = 16) -> tuple[list[dict], list[dict]]:
    """(results with `pred_text` added, failed items with `error`). Decodes in chunks to bound memory."""
    sr = model_sample_rate(model)
    results, failed = [], []
    chunk = max(1, batch_size) * 8
    with bar("transcribe", len(items), unit="clip") as progress:
        for start in range(0, len(items), chunk):
            _transcribe_chunk(model, items[start:start + chunk], sr, batch_size, results, failed)
            progress.update(completed=min(len(items), start + chunk))
    return results, failed


def _transcribe_chunk(model, items: list[dict], sr: int, batch_size: int, results: list, failed: list) -> None:
    """Decode `items` (bad files into `failed`, the rest on) and transcribe them in batches."""
    ok, clips = [], []
    for item in items:
        try:
            clips.append(load_clip(item["audio_filepath"], sr))
            ok.append(item)
        except HackathonError as exc:
            failed.append({**item, "error": exc.message})
        except Exception as exc:  # decoder errors of every kind: report, go on with the batch
            failed.append({**item, "error": f"{type(exc).__name__}: {exc}"})
    for item, text in zip(ok, transcribe_arrays(model, clips, batch_size)):
        results.append({**item, "pred_text": text})


def load_transcriber(model_path: str | Path):
    """A .nemo file -> the NeMo model; a folder -> a Whisper export (CTranslate2 or transformers)."""
    from tasks.asr.model import restore_model

    path = Path(model_path).expanduser()
    if path.is_dir():
        from tasks.asr.whisper_lora.decode import WhisperTranscriber

        return WhisperTranscriber(path)
    return restore_model(path)


def transcribe_command(model_path: str | Path, inputs: Sequence[str], out: str | Path | None = None,
                       batch_size: int = 16) -> dict:
    """What `hackathon asr transcribe` runs. Returns {results, failed, seconds, out}."""

    items = expand_inputs(inputs)
    if not items:
        raise HackathonError("No audio files found in the given inputs.", fix="Pass audio files, a folder or a NeMo manifest.")
    t0 = time.time()
    model = load_transcriber(model_path)
    results, failed = transcribe_items(model, items, batch_size)
    summary = {"results": results, "failed": failed, "seconds": round(time.time() - t0, 2), "out": None}
    if out is not None:
        out = Path(out)
        if out.exists():
            raise HackathonError(f"{out} already exists.", fix="Choose a new --out file (nothing is overwritten).")
        atomic_write_jsonl(out, results + failed)
        summary["out"] = str(out)
    return summary


def format_lines(summary: dict) -> Iterable[str]:
    for r in summary["results"]:
        yield f"{r['audio_filepath']}\t{r['pred_text']}"
    for f in summary["failed"]:
        yield f"{f['audio_filepath']}\tFAILED: {f['error']}"


def as_json(summary: dict) -> str:
    return json.dumps(summary, ensure_ascii=False, indent=2)
