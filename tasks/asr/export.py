"""Export stage and `hackathon asr export RUN_DIR|MODEL.nemo`: a deployable .nemo and an ONNX model.

The ONNX graph is NeMo's export of encoder + CTC decoder: input `audio_signal` = log-mel features
[batch, features, frames] (the preprocessor settings are in export/model_config.yaml) plus `length`,
output = per-frame log-probabilities [batch, frames, vocabulary + blank]. Greedy decoding = argmax per
frame, merge repeats, drop blank (the last index). The export is checked: onnxruntime's greedy text
must equal NeMo's on a few clips (export/onnx_check.json); a mismatch fails the export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hackathon.atomic import atomic_path, atomic_write_json, atomic_write_text
from hackathon.errors import HackathonError

NEMO_NAME = "asr_model.nemo"
ONNX_NAME = "asr_model.onnx"
EXPORT_DIR = "export"


def features(model, clip):
    """Log-mel features exactly as the NeMo model computes them (eval mode: no dither, no augment)."""
    import torch

    model.eval()
    with torch.inference_mode():
        signal = torch.from_numpy(clip).unsqueeze(0)
        length = torch.tensor([signal.shape[1]])
        feats, feat_len = model.preprocessor(input_signal=signal, length=length)
    return feats.numpy(), feat_len.numpy()


def greedy_ctc_text(log_probs, vocabulary: list[str], length: int | None = None) -> str:
    """Best path: argmax per frame, merge repeats, drop the blank (index len(vocabulary))."""
    ids = log_probs.argmax(-1)[: length if length is not None else None]
    blank = len(vocabulary)
    out, prev = [], None
    for i in ids.tolist():
        if i != prev and i != blank:
            out.append(vocabulary[i])
        prev = i
    return "".join(out)


def onnx_transcribe(session, model, clip) -> str:
    feats, feat_len = features(model, clip)
    inputs = {i.name for i in session.get_inputs()}
    feed = {"audio_signal": feats}
    if "length" in inputs:
        feed["length"] = feat_len.astype("int64")
    log_probs = session.run(None, feed)[0][0]
    return greedy_ctc_text(log_probs, list(model.decoder.vocabulary))


def export_onnx(model, target: Path) -> Path:
    model.eval()
    with atomic_path(target, suffix=".onnx") as tmp:
        model.export(str(tmp))
    return target


def check_onnx(model, onnx_path: Path, clips: list[tuple[str, object]]) -> dict:
    """Compare onnxruntime's greedy text with NeMo's transcribe on the same clips."""
    import onnxruntime as ort

    from tasks.asr.transcribe import transcribe_arrays

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    nemo_texts = transcribe_arrays(model, [c for _, c in clips], batch_size=1)
    pairs = [{"audio_filepath": path, "nemo": nt, "onnx": onnx_transcribe(session, model, clip)}
             for (path, clip), nt in zip(clips, nemo_texts)]
    return {"n_utts": len(pairs), "identical": all(p["nemo"] == p["onnx"] for p in pairs), "pairs": pairs}


def noise_clips(sample_rate: int, n: int = 2, seconds: float = 2.0) -> list[tuple[str, object]]:
    """Without test audio the check still compares NeMo and ONNX outputs, on seeded noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [(f"noise-{i}", (0.05 * rng.standard_normal(int(sample_rate * seconds))).astype("float32")) for i in range(n)]


def export_model(model_path: Path, out_dir: Path, check_audio: list[str], onnx: bool = True, log=None) -> dict:
    """Write out_dir/asr_model.nemo (+ .onnx, model_config.yaml, vocabulary.json, onnx_check.json)."""
    from omegaconf import OmegaConf

    from tasks.asr.model import restore_model
    from tasks.asr.transcribe import load_clip, model_sample_rate

    out_dir.mkdir(parents=True, exist_ok=True)
    model = restore_model(model_path)
    nemo_target = out_dir / NEMO_NAME
    if Path(model_path).resolve() != nemo_target.resolve():
        with atomic_path(nemo_target, suffix=".nemo") as tmp:
            shutil.copyfile(model_path, tmp)
    atomic_write_text(out_dir / "model_config.yaml", OmegaConf.to_yaml(model.cfg))
    atomic_write_json(out_dir / "vocabulary.json", {"vocabulary": list(model.decoder.vocabulary),
                                                    "blank_index": len(model.decoder.vocabulary)})
    summary = {"nemo": str(nemo_target), "onnx": None, "onnx_check": None}
    if onnx:
        onnx_path = export_onnx(model, out_dir / ONNX_NAME)
        sr = model_sample_rate(model)
        clips = [(p, load_clip(p, sr)) for p in check_audio] or noise_clips(sr)
        check = check_onnx(model, onnx_path, clips)
        atomic_write_json(out_dir / "onnx_check.json", check)
        summary.update(onnx=str(onnx_path), onnx_check={k: check[k] for k in ("n_utts", "identical")})
        if not check["identical"]:
            bad = next(p for p in check["pairs"] if p["nemo"] != p["onnx"])
            raise HackathonError(f"ONNX export of {model_path} disagrees with NeMo on {bad['audio_filepath']}: "
                                 f"NeMo {bad['nemo']!r} vs ONNX {bad['onnx']!r} (see {out_dir / 'onnx_check.json'}).",
                                 fix="Report it with the onnx_check.json; deploy the .nemo meanwhile.")
    return summary


def spread(entries, n: int) -> list[str]:
    """n clips spread over the manifest (different phrases/speakers, not the first n of one)."""
    if n <= 0 or not entries:
        return []
    step = max(1, len(entries) // n)
    return [e.audio_filepath for e in entries[::step][:n]]


def export_stage(ctx) -> None:
    from data_tools.manifest import read_manifest

    from tasks.asr.prepare import manifest_path
    from tasks.asr.train import TRAINED_MODEL

    cfg = ctx.cfg
    test = read_manifest(manifest_path(ctx.run_dir, "test"))
    check_audio = spread(test, int(cfg.export.check_utts))
    summary = export_model(ctx.run_dir / TRAINED_MODEL, ctx.dir(EXPORT_DIR), check_audio, onnx=bool(cfg.export.onnx))
    ctx.record(**summary)


def export_command(target: str | Path, out: str | Path | None = None, onnx: bool = True,
                   check_audio: list[str] | None = None) -> dict:
    """`hackathon asr export RUN_DIR|MODEL.nemo [--out DIR]`.

    RUN_DIR: exports its model/trained.nemo into RUN_DIR/export (ONNX checked on its test clips).
    MODEL.nemo: exports into --out (default: <model>.export/ next to it), checked on `check_audio` if given.
    """
    from tasks.asr.train import TRAINED_MODEL

    target = Path(target).expanduser()
    if target.is_dir():
        model_path = target / TRAINED_MODEL
        if not model_path.exists():
            raise HackathonError(f"{target} has no {TRAINED_MODEL}: not an ASR run dir, or training did not finish.",
                                 fix="Pass a finished ASR run dir (runs/asr/...) or a .nemo file.")
        out_dir = Path(out) if out else target / EXPORT_DIR
        if check_audio is None:
            from data_tools.manifest import read_manifest

            from tasks.asr.prepare import manifest_path

            test = manifest_path(target, "test")
            check_audio = spread(read_manifest(test), 3) if test.exists() else []
    else:
        model_path = target
        out_dir = Path(out) if out else target.with_name(target.stem + ".export")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / NEMO_NAME).exists():
        raise HackathonError(f"{out_dir} is not empty and holds no earlier export.",
                             fix="Choose a new or empty --out folder (nothing is overwritten).")
    return export_model(model_path, out_dir, check_audio or [], onnx=onnx)
