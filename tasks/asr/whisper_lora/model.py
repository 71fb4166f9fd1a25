"""Model stage (whisper_lora): base weights -> transformers folder, encoder outputs cached, zero-shot CER.

- `model.init` (packaged:base / local folder / Hub name) becomes a transformers folder
  (tasks/asr/whisper_lora/weights.py); where it came from is written to model/whisper_base.json.
- With `model.freeze_encoder` the encoder runs ONCE per clip of every split and its outputs are
  cached in model/encoder/<split>/ (float32 .npy, one per clip, written atomically; a killed stage
  resumes with the clips it has). Training, validation and evaluate read them: on a CPU the encoder
  (30 s of audio per clip) costs far more than the decoder.
- The zero-shot baseline: the base model transcribes the held-out test split; `zero_shot_cer` (and
  `zero_shot_wer`) go into metrics.json, the transcripts into model/zero_shot_predictions.jsonl.
- model/vocabulary.json: the shared score stage's OOV table (characters the tokenizer cannot round-trip).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from hackathon.core.atomic import atomic_path, atomic_write_json, atomic_write_jsonl, read_json
from hackathon.core.errors import HackathonError

BASE_FILE = "model/whisper_base.json"
ENCODER_DIR = "model/encoder"
ZERO_SHOT_FILE = "model/zero_shot_predictions.jsonl"
VOCABULARY_FILE = "model/vocabulary.json"  # same name as the NeMo backend's: the score stage reads it
PROGRESS_EVERY_S = 20


# ---------------------------------------------------------------- devices and loading

def use_cuda(trainer_cfg) -> bool:
    import torch

    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise HackathonError("trainer.accelerator is 'gpu' but no CUDA GPU is visible.",
                             fix="Use trainer.accelerator=auto (or cpu), or check `hackathon gpus` / nvidia-smi.")
    return torch.cuda.is_available() and accelerator != "cpu"


def int8_wanted(lora_cfg, cuda: bool) -> bool:
    setting = str(lora_cfg.get("int8_base", "auto")).lower()
    if setting in ("true", "1", "yes"):
        if not cuda:
            raise HackathonError("lora.int8_base=true needs a CUDA GPU (bitsandbytes int8 runs on the GPU).",
                                 fix="Use lora.int8_base=auto (int8 on GPU, fp32 on CPU) or false.")
        return True
    return cuda and setting == "auto"


def load_whisper(model_dir: Path, cuda: bool = False, int8: bool = False):
    """WhisperForConditionalGeneration from a transformers folder: fp32 on CPU, fp16 on GPU, or the
    bitsandbytes int8 base (LoRA training's memory saver) when `int8`."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from tasks.asr.whisper_lora.decode import quiet_transformers

    quiet_transformers()
    if int8:
        from transformers import BitsAndBytesConfig

        model = WhisperForConditionalGeneration.from_pretrained(
            model_dir, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": 0})
    else:
        model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float16 if cuda else torch.float32)
        if cuda:
            model = model.to("cuda")
    return model.eval()


def base_dir(run_dir: Path) -> Path:
    info = read_json(Path(run_dir) / BASE_FILE, default=None)
    if not info:
        raise HackathonError(f"{Path(run_dir) / BASE_FILE} is missing.", fix="Re-run from the model stage: --from model")
    return Path(info["transformers_dir"])


# ---------------------------------------------------------------- the encoder cache

def clip_key(audio_filepath: str, model_dir: Path) -> str:
    """The clip's bytes + the base model: a clip rewritten with the same content (a shared demo cache, a
    copied folder) keeps its cached encoder output, a changed clip gets a new one."""
    from hackathon.core.fingerprint import file_sha256

    p = Path(audio_filepath)
    raw = f"{file_sha256(p) if p.exists() else 'missing:' + str(p.resolve())}|{Path(model_dir).resolve()}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def state_path(run_dir: Path, split: str, audio_filepath: str, model_dir: Path) -> Path:
    return Path(run_dir) / ENCODER_DIR / split / f"{clip_key(audio_filepath, model_dir)}.npy"


def cache_encoder_states(ctx, model, model_dir: Path, splits=("train", "val", "test"), batch_size: int = 4) -> int:
    """Run the encoder once per clip (missing ones only); returns how many were computed."""
    import torch

    from data_tools.manifest import read_manifest
    from tasks.asr.prepare import manifest_path
    from tasks.asr.whisper_lora.decode import encode, load_clip, log_mel

    todo = []
    for split in splits:
        for e in read_manifest(manifest_path(ctx.run_dir, split)):
            target = state_path(ctx.run_dir, split, e.audio_filepath, model_dir)
            if not target.exists():
                todo.append((e.audio_filepath, target))
    total, done, t0, last = len(todo), 0, time.time(), time.time()
    if total:
        ctx.log.info("encoding %d clips once (frozen encoder; cached in %s)", total, ctx.run_dir / ENCODER_DIR)
    for start in range(0, total, batch_size):
        chunk = todo[start:start + batch_size]
        feats = log_mel([load_clip(path) for path, _ in chunk])
        with torch.inference_mode():
            states = encode(model, torch.from_numpy(feats)).float().cpu().numpy()
        for (_, target), s in zip(chunk, states):
            with atomic_path(target, suffix=".npy.tmp") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, s)
        done += len(chunk)
        if time.time() - last > PROGRESS_EVERY_S or done == total:
            last = time.time()
            rate = (time.time() - t0) / done
            ctx.log.info("encoder cache: %d/%d clips (%.2f s/clip, ~%.0f s left)", done, total, rate, rate * (total - done))
            print(f"  encoder cache: {done}/{total} clips", flush=True)
    return total


def load_states(run_dir: Path, split: str, entries, model_dir: Path) -> np.ndarray:
    paths = [state_path(run_dir, split, e.audio_filepath, model_dir) for e in entries]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise HackathonError(f"{len(missing)} cached encoder outputs of the {split} split are missing (e.g. {missing[0]}).",
                             fix="Re-run from the model stage: --from model")
    return np.stack([np.load(p) for p in paths])


# ---------------------------------------------------------------- transcribing a split

def transcribe_split(ctx, model, tokens, split: str, batch_size: int) -> list[dict]:
    """[{audio_filepath, text, speaker, pred_text}] for a split: from the cached encoder states when the
    encoder is frozen (identical to running it), else through the whole model."""
    from data_tools.manifest import read_manifest
    from tasks.asr.prepare import manifest_path
    from tasks.asr.whisper_lora.decode import load_clip, log_mel, transcribe_features

    wcfg = ctx.cfg.model
    entries = read_manifest(manifest_path(ctx.run_dir, split))
    frozen = bool(wcfg.freeze_encoder)
    inputs = (load_states(ctx.run_dir, split, entries, base_dir(ctx.run_dir)) if frozen
              else log_mel([load_clip(e.audio_filepath) for e in entries]))
    texts = transcribe_features(model, inputs, tokens, str(wcfg.language), str(wcfg.task), batch_size, encoded=frozen)
    return [{"audio_filepath": e.audio_filepath, "text": e.text, "speaker": e.speaker, "pred_text": t}
            for e, t in zip(entries, texts)]


def tokenizer_oov(tokens, split_texts: dict) -> dict:
    """Per split, characters whose tokenize -> detokenize round trip fails (byte-level BPE: normally none)."""
    report = {}
    for split, texts in split_texts.items():
        chars = sorted({ch for t in texts for ch in set(t) if tokens.decode(tokens.encode(ch)) != ch.strip()})
        counts = {ch: sum(t.count(ch) for t in texts) for ch in chars}
        report[split] = {"characters": counts, "n_chars": sum(counts.values()),
                         "n_utts_affected": sum(1 for t in texts if any(ch in t for ch in chars)), "n_utts": len(texts)}
    return report


# ---------------------------------------------------------------- stage

def model_stage(ctx) -> None:
    import shutil

    from tasks.asr.evaluate import aggregate, score_predictions
    from tasks.asr.prepare import load_split_texts, read_summary
    from tasks.asr.whisper_lora.decode import load_tokens
    from tasks.asr.whisper_lora.weights import source_kind, transformers_dir

    cfg = ctx.cfg
    source = str(cfg.model.init)
    model_dir = transformers_dir(source, ctx.log)
    atomic_write_json(ctx.path(BASE_FILE), {"source": source, "kind": source_kind(source),
                                            "transformers_dir": str(model_dir)})
    tokens = load_tokens(model_dir)
    tokens.prompt(str(cfg.model.language), str(cfg.model.task))  # unknown language: fail now, clearly
    split_texts = load_split_texts(ctx)
    oov = tokenizer_oov(tokens, split_texts)
    cuda = use_cuda(cfg.trainer)
    model = load_whisper(model_dir, cuda=cuda)
    atomic_write_json(ctx.path(VOCABULARY_FILE), {"source": source, "tokenizer": "whisper byte-level BPE",
                                                  "oov": oov, "parameters": int(sum(p.numel() for p in model.parameters()))})
    if bool(cfg.model.freeze_encoder):
        if not ctx.resuming and (ctx.run_dir / ENCODER_DIR).exists():
            shutil.rmtree(ctx.run_dir / ENCODER_DIR)  # a fresh model stage: base or data changed
        computed = cache_encoder_states(ctx, model, model_dir, batch_size=int(cfg.evaluate.batch_size))
        ctx.record(encoder_states_computed=computed)
    t0 = time.time()
    rows = score_predictions(transcribe_split(ctx, model, tokens, "test", int(cfg.evaluate.batch_size)),
                             read_summary(ctx.run_dir)["language"])
    atomic_write_jsonl(ctx.path(ZERO_SHOT_FILE), rows)
    totals = aggregate(rows)
    ctx.write_metrics({"zero_shot_cer": totals["cer"], "zero_shot_wer": totals["wer"], "backend": "whisper_lora",
                       "base_model": source})
    ctx.record(source=source, zero_shot_cer=totals["cer"], zero_shot_seconds=round(time.time() - t0, 2))
    ctx.log.info("zero-shot %s on the test split: CER %.4f (e.g. %r -> %r)", source, totals["cer"],
                 rows[0]["text"] if rows else "", rows[0]["pred_text"] if rows else "")
