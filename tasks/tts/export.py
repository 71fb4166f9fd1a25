"""TTS export stage: FastPitch (and the trained HiFiGAN) to ONNX through NeMo's own export, checked.

Output (export/): fastpitch.onnx, hifigan.onnx (only when the run trained one; Griffin-Lim is numpy and
needs no export), pinyin_dict.txt + tts_export.yaml (tokenizer config, its token list, mel settings) and
export_check.json. tasks/tts/onnx_infer.py reads exactly these files; it is also what the check runs, so
the numbers describe what `hackathon serve` says.

The check, on the held-out test sentences (demo inputs):
- tokens: the predictor's tokenizer (rebuilt from the exported files) gives FastPitchModel.parse's ids;
- mel: FastPitch in NeMo (generate_spectrogram) vs onnxruntime on the same tokens, pitch shift 0 and the
  same pace: frame counts equal, max |difference| in log-mel units;
- vocoder (HiFiGAN): NeMo convert_spectrogram_to_audio vs onnxruntime on the same mel: max |difference|
  of the waveform.
Outside the tolerances the stage fails (the export is not what was trained).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from hackathon.core.atomic import atomic_path, atomic_write_text
from hackathon.core.errors import HackathonError
from hackathon.core.export_check import agreement, record_check, sig, write_check
from tasks.tts.onnx_infer import DICT_NAME, EXPORT_DIR, FASTPITCH_ONNX, HIFIGAN_ONNX, SETTINGS

MEL_TOLERANCE = 1e-2  # log-mel units; spectra differ audibly from ~0.1 on
WAVEFORM_TOLERANCE = 1e-3  # full scale is 1.0; 16-bit quantisation is 3e-5


def export_onnx(model, target: Path) -> Path:
    """NeMo's own Exportable.export (its input/output names and dynamic axes) into `target`, atomically."""
    model.eval()
    with atomic_path(target, suffix=".onnx") as tmp:
        model.export(str(tmp))
    return target


def write_settings(model, export_dir: Path) -> None:
    from omegaconf import OmegaConf

    from tasks.tts.vocoder import MelSettings

    settings = {"text_tokenizer": OmegaConf.to_container(model.cfg.text_tokenizer, resolve=True),
                "tokens": list(model.vocab.tokens),
                "mel": dataclasses.asdict(MelSettings.from_fastpitch(model))}
    atomic_write_text(export_dir / SETTINGS, OmegaConf.to_yaml(OmegaConf.create(settings)))


def nemo_mel(model, tokens: list[int], pace: float) -> np.ndarray:
    import torch

    with torch.no_grad():
        spec = model.generate_spectrogram(tokens=torch.tensor([tokens], dtype=torch.long, device=model.device), pace=pace)
    return spec[0].cpu().numpy()


def nemo_waveform(hifigan, mel: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        audio = hifigan.convert_spectrogram_to_audio(spec=torch.from_numpy(mel).unsqueeze(0).to(hifigan.device))
    return audio.reshape(-1).cpu().numpy()


def check_export(model, hifigan, predictor, sentences: list[str], pace: float) -> dict:
    """NeMo vs the ONNX predictor on `sentences` (see the module docstring)."""
    items, mel_diff, wave_diff = [], 0.0, 0.0
    for text in sentences:
        nemo_tokens = model.parse(text, normalize=False)[0].tolist()
        tokens = predictor.tokens(text)
        ref = nemo_mel(model, nemo_tokens, pace)
        got = predictor.mel_of_tokens(nemo_tokens, pace)
        n = min(ref.shape[1], got.shape[1])
        d = float(np.abs(ref[:, :n] - got[:, :n]).max()) if n else 0.0
        mel_diff = max(mel_diff, d)
        item = {"text": text, "tokens_identical": tokens == nemo_tokens, "frames": int(ref.shape[1]),
                "onnx_frames": int(got.shape[1]), "mel_max_abs_diff": sig(d)}
        if hifigan is not None:
            wave_ref = nemo_waveform(hifigan, ref)
            name = predictor.hifigan.get_inputs()[0].name
            wave = np.asarray(predictor.hifigan.run(None, {name: ref[None].astype(np.float32)})[0]).reshape(-1)
            m = min(len(wave_ref), len(wave))
            wd = float(np.abs(wave_ref[:m] - wave[:m]).max()) if m else 0.0
            wave_diff = max(wave_diff, wd)
            item.update(samples=len(wave_ref), onnx_samples=len(wave), waveform_max_abs_diff=sig(wd),
                        waveform_peak=sig(np.abs(wave_ref).max()) if len(wave_ref) else 0.0)
        items.append(item)
    n = len(items)
    same_tokens = sum(it["tokens_identical"] for it in items)
    same_frames = sum(it["frames"] == it["onnx_frames"] for it in items)
    check = {"task": "tts", "framework": "NeMo", "runtime": "onnxruntime", "n_inputs": n, "pace": pace,
             "max_abs_diff": {"mel": sig(mel_diff)},
             "agreement": {"tokens": agreement(same_tokens, n), "mel_frames": agreement(same_frames, n)},
             "tolerances": {"mel": MEL_TOLERANCE}, "vocoder_exported": hifigan is not None, "items": items,
             "notes": [] if hifigan is not None else ["no HiFiGAN in this run: Griffin-Lim (numpy) vocodes, nothing to export"]}
    if hifigan is not None:
        same_len = sum(it["samples"] == it["onnx_samples"] for it in items)
        check["max_abs_diff"]["waveform"] = sig(wave_diff)
        check["agreement"]["waveform_samples"] = agreement(same_len, n)
        check["tolerances"]["waveform"] = WAVEFORM_TOLERANCE
        wave_ok = same_len == n and wave_diff <= WAVEFORM_TOLERANCE
    else:
        wave_ok = True
    check["passed"] = bool(n and same_tokens == same_frames == n and mel_diff <= MEL_TOLERANCE and wave_ok)
    return check


def check_sentences(ctx) -> list[str]:
    """The held-out sentences (names unseen in training), spread like the synthesize stage picks them."""
    from data_tools.manifest import read_manifest
    from tasks.tts.synthesize import evenly_spaced

    rows = [e.text for e in read_manifest(ctx.path("g2p", "test.json"))]
    rows = rows or [e.text for e in read_manifest(ctx.path("g2p", "val.json"))]
    return evenly_spaced(rows, int(ctx.cfg.export.check_sentences))


def export_stage(ctx) -> None:
    from tasks.tts.fastpitch import load_fastpitch
    from tasks.tts.hifigan import load_hifigan
    from tasks.tts.onnx_infer import load

    out = ctx.dir(EXPORT_DIR)
    model = load_fastpitch(ctx.run_dir)
    export_onnx(model, out / FASTPITCH_ONNX)
    hifigan = None
    if ctx.cfg.hifigan.enabled:
        hifigan = load_hifigan(ctx.run_dir)
        export_onnx(hifigan, out / HIFIGAN_ONNX)
    else:
        (out / HIFIGAN_ONNX).unlink(missing_ok=True)  # an earlier export's vocoder, not this run's
    with atomic_path(out / DICT_NAME) as tmp:
        shutil.copyfile(ctx.path("g2p", "pinyin_dict.txt"), tmp)
    write_settings(model, out)

    sentences = check_sentences(ctx)
    if not sentences:
        raise HackathonError(f"No test or val sentence in {ctx.path('g2p')} to check the export on.",
                             fix="Give the data a test split (names unseen in training).")
    predictor = load(ctx.run_dir, vocoder="hifigan" if hifigan is not None else "griffin_lim", prefer_gpu=False)
    check = check_export(model, hifigan, predictor, sentences, float(ctx.cfg.synthesize.pace))
    check_path = write_check(out, check)
    metrics = {"tts_export_mel_max_abs_diff": check["max_abs_diff"]["mel"],
               "tts_export_token_agreement": round(sum(i["tokens_identical"] for i in check["items"]) / len(sentences), 4)}
    if hifigan is not None:
        metrics["tts_export_waveform_max_abs_diff"] = check["max_abs_diff"]["waveform"]
    record_check(ctx, check, metrics)
    ctx.record(fastpitch_onnx=str(out / FASTPITCH_ONNX), hifigan_onnx=str(out / HIFIGAN_ONNX) if hifigan else None,
               **{k: v for k, v in check.items() if k in ("max_abs_diff", "agreement", "passed")})
    if not check["passed"]:
        raise HackathonError(f"The TTS ONNX export differs from NeMo beyond tolerance: {check['max_abs_diff']}, "
                             f"agreement {check['agreement']} (see {check_path}).",
                             fix="Report it with the export_check.json; synthesize with the .nemo models meanwhile.")
