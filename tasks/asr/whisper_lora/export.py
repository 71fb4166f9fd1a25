"""Export stage (whisper_lora): adapter, merged transformers model, CTranslate2 int8 for faster-whisper.

export/adapter/  the best LoRA adapter (peft format; load it on the same base)
export/merged/   LoRA folded into the base weights: a plain WhisperForConditionalGeneration folder
export/ct2/      ctranslate2's own TransformersConverter of export/merged (export.ct2_quantization),
                 loaded with faster-whisper
export/averaged/ with export.average_best_k=k: the mean of the merged weights of the best k checkpoints
                 (checkpoints/whisper/best-*.ckpt by val CER)

Checks (metrics.json): the merged model (full encoder run) and the CTranslate2 model (faster-whisper)
transcribe the held-out test split; `export_merged_agreement` / `export_ct2_agreement` = fraction of
clips whose transcript equals the adapter model's (predictions.jsonl), plus each one's CER.
Every folder is written atomically; `hackathon asr transcribe` takes export/merged or export/ct2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hackathon.core.atomic import atomic_dir, atomic_write_json

EXPORT_DIR = "export"
INFO_FILE = "hackathon_whisper.json"  # language/task for `asr transcribe`
COPIED_FROM_BASE = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json")


def write_merged(model, base: Path, target: Path, info: dict) -> Path:
    with atomic_dir(target) as tmp:
        model.save_pretrained(str(tmp))
        for name in COPIED_FROM_BASE:
            if (base / name).is_file():
                shutil.copyfile(base / name, tmp / name)
        atomic_write_json(tmp / INFO_FILE, info)
    return target


def convert_to_ct2(merged_dir: Path, target: Path, quantization: str, info: dict) -> Path:
    """CTranslate2 conversion with ctranslate2's own converter (tokenizer copied for faster-whisper)."""
    from ctranslate2.converters import TransformersConverter

    with atomic_dir(target) as tmp:
        TransformersConverter(str(merged_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
            str(tmp), quantization=quantization, force=True)
        atomic_write_json(tmp / INFO_FILE, {**info, "quantization": quantization})
    return target


def merged_lora_weights(model) -> dict:
    """{base weight name: merged weight} of every LoRA-wrapped linear (W + scale * B @ A)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    model.merge_adapter()
    try:
        for name, module in model.named_modules():
            if isinstance(module, LoraLayer):
                clean = name.replace("base_model.model.", "", 1)
                out[f"{clean}.weight"] = module.get_base_layer().weight.detach().clone()
    finally:
        model.unmerge_adapter()
    return out


def average_best(ctx, k: int, info: dict) -> dict:
    """WeNet-style averaging of the best k epochs (merged weights), written to export/averaged/; returns
    test CER before (best single epoch) and after."""
    import torch

    from tasks.asr.averaging import best_checkpoints, mean_state_dict
    from tasks.asr.evaluate import aggregate, read_predictions, score_predictions
    from tasks.asr.prepare import read_summary
    from tasks.asr.whisper_lora.decode import load_tokens
    from tasks.asr.whisper_lora.model import base_dir, load_whisper, transcribe_split
    from tasks.asr.whisper_lora.train import CKPT_NAME, MONITOR, load_adapter_state, load_trained

    model, merged, epochs = load_trained(ctx), [], []
    for _, path in best_checkpoints(ctx.checkpoints_dir / CKPT_NAME, k, MONITOR):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # the adapter weights only
        load_adapter_state(model, ckpt["state_dict"])
        merged.append(merged_lora_weights(model))
        epochs.append(int(ckpt["epoch"]) + 1)
    averaged = mean_state_dict(merged)
    base = load_whisper(base_dir(ctx.run_dir))
    missing = [n for n in averaged if n not in dict(base.named_parameters())]
    if missing:
        raise RuntimeError(f"averaged weights do not match the base model: {missing[:3]}")
    with torch.no_grad():
        params = dict(base.named_parameters())
        for name, value in averaged.items():
            params[name].copy_(value)
    language = read_summary(ctx.run_dir)["language"]
    rows = score_predictions(transcribe_split(ctx, base, load_tokens(base_dir(ctx.run_dir)), "test",
                                              int(ctx.cfg.evaluate.batch_size)), language)
    before = aggregate(read_predictions(ctx.run_dir)[0])["cer"]
    write_merged(base, base_dir(ctx.run_dir), ctx.path(EXPORT_DIR, "averaged"), {**info, "averaged_epochs": epochs})
    return {"average_best_k": len(epochs), "averaged_epochs": epochs,
            "cer_before_average": before, "cer_after_average": aggregate(rows)["cer"]}


def export_stage(ctx) -> None:
    import torch

    from data_tools.manifest import read_manifest
    from tasks.asr.evaluate import aggregate, read_predictions, score_predictions
    from tasks.asr.prepare import manifest_path, read_summary
    from tasks.asr.whisper_lora.decode import (faster_whisper_text, load_clip, load_faster_whisper, load_tokens,
                                               log_mel, transcribe_features)
    from tasks.asr.whisper_lora.model import base_dir
    from tasks.asr.whisper_lora.train import ADAPTER_DIR, load_trained

    cfg = ctx.cfg
    language, task = str(cfg.model.language), str(cfg.model.task)
    info = {"backend": "whisper_lora", "language": language, "task": task, "base": str(cfg.model.init)}
    base = base_dir(ctx.run_dir)
    score_language = read_summary(ctx.run_dir)["language"]
    with atomic_dir(ctx.path(EXPORT_DIR, "adapter")) as tmp:
        shutil.copytree(ctx.run_dir / ADAPTER_DIR, tmp, dirs_exist_ok=True)
    adapter_rows, _ = read_predictions(ctx.run_dir)
    adapter_text = {r["audio_filepath"]: r["pred_text"] for r in adapter_rows}
    entries = read_manifest(manifest_path(ctx.run_dir, "test"))
    clips = [load_clip(e.audio_filepath) for e in entries]
    items = [{"audio_filepath": e.audio_filepath, "text": e.text, "speaker": e.speaker} for e in entries]
    metrics: dict = {}

    def check(name: str, texts: list[str]) -> None:
        rows = score_predictions([{**it, "pred_text": t} for it, t in zip(items, texts)], score_language)
        agree = sum(adapter_text.get(it["audio_filepath"]) == t for it, t in zip(items, texts)) / max(1, len(items))
        metrics.update({f"export_{name}_agreement": agree, f"export_{name}_cer": aggregate(rows)["cer"]})
        ctx.log.info("export check %s: %.0f%% of test transcripts equal the adapter model's, CER %.4f",
                     name, 100 * agree, metrics[f"export_{name}_cer"])
        for it, t in zip(items, texts):
            if adapter_text.get(it["audio_filepath"]) != t:
                ctx.log.warning("%s differs on %s: adapter %r, %s %r", name, it["audio_filepath"],
                                adapter_text.get(it["audio_filepath"]), name, t)

    merged_dir = ctx.path(EXPORT_DIR, "merged")
    if bool(cfg.export.merged) or bool(cfg.export.ct2):
        merged = load_trained(ctx).merge_and_unload()
        write_merged(merged, base, merged_dir, info)
        if bool(cfg.export.merged):
            with torch.inference_mode():
                check("merged", transcribe_features(merged, log_mel(clips), load_tokens(merged_dir), language, task,
                                                    int(cfg.evaluate.batch_size)))
        del merged
    if bool(cfg.export.ct2):
        ct2_dir = convert_to_ct2(merged_dir, ctx.path(EXPORT_DIR, "ct2"), str(cfg.export.ct2_quantization), info)
        fw = load_faster_whisper(ct2_dir)
        check("ct2", [faster_whisper_text(fw, clip, language, task) for clip in clips])
        if not bool(cfg.export.merged):
            shutil.rmtree(merged_dir, ignore_errors=True)
    k = int(cfg.export.average_best_k)
    if k > 0:
        metrics.update(average_best(ctx, k, info))
    ctx.write_metrics(metrics)
    ctx.record(**{key: v for key, v in metrics.items() if not isinstance(v, list)})
