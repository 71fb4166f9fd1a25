"""Export stage and `hackathon asr export RUN_DIR|MODEL.nemo`: a deployable .nemo and an ONNX model.

The ONNX graph is the model's encoder + CTC decoder: inputs `audio_signal` = log-mel features
[batch, features, frames] (the preprocessor settings are in export/model_config.yaml) and `length`
[batch]; outputs per-frame log-probabilities [batch, frames, vocabulary + blank] and `encoded_lengths`.
The encoder's padding masks stay in the graph (see dynamic_conv_masks), so a padded batch gives each clip
what it gets alone. Greedy decoding = argmax per frame, merge repeats, drop blank (the last index).
tasks/asr/onnx_infer.py is the in-process predictor (features + session + decoding) that `serve` runs.
The export is checked against NeMo with that predictor on a few test clips (export/export_check.json:
max log-prob difference, transcripts one at a time and batched); a disagreement fails the export.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from types import MethodType

from hackathon.core.atomic import atomic_path, atomic_write_json, atomic_write_text
from hackathon.core.errors import HackathonError
from hackathon.core.export_check import agreement, sig, write_check

NEMO_NAME = "asr_model.nemo"
ONNX_NAME = "asr_model.onnx"
EXPORT_DIR = "export"


LOGPROB_TOLERANCE = 1e-3  # max |NeMo - onnxruntime| log-probability: float32 round-off, far below a decision


@contextmanager
def dynamic_conv_masks(model):
    """Keep the encoder's padding masks in the exported graph, computed from the input length.

    NeMo's own export switches MaskedConv1d masks off and drops the `length` input; a padded batch then
    leaks the padding into each clip's last frames (measured: '我忘记带门禁卡了' came out as
    '我忘记带门禁卡了外' in a batch). Its cached position table would be traced as a constant of the example's
    length, so it is replaced by an arange of the actual length for the export."""
    from nemo.collections.asr.parts.submodules.jasper import MaskedConv1d

    def mask_input(self, x, lens):
        import torch

        positions = torch.arange(x.size(2), device=x.device).unsqueeze(0)
        return x * (positions < lens.unsqueeze(1)).unsqueeze(1).to(x.dtype)

    convs = [m for m in model.modules() if isinstance(m, MaskedConv1d) and m.use_mask]
    for m in convs:
        m.mask_input = MethodType(mask_input, m)
    try:
        yield
    finally:
        for m in convs:
            del m.mask_input


class _CtcForExport:
    """encoder + CTC decoder with lengths in and out (built lazily: torch is imported inside)."""

    @staticmethod
    def build(model):
        import torch

        class CtcGraph(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder, self.decoder = model.encoder, model.decoder

            def forward(self, audio_signal, length):
                encoded, encoded_len = self.encoder(audio_signal=audio_signal, length=length)
                return self.decoder(encoder_output=encoded), encoded_len

        return CtcGraph().eval()


def export_onnx(model, target: Path) -> Path:
    """audio_signal [B, features, T] + length [B] -> logprobs [B, T', vocabulary + blank] + encoded_lengths [B]."""
    import torch

    model.eval()
    graph = _CtcForExport.build(model)
    n_feat = int(model.cfg.preprocessor.features)
    example = (torch.randn(2, n_feat, 160), torch.tensor([160, 97], dtype=torch.int64))
    with atomic_path(target, suffix=".onnx") as tmp, dynamic_conv_masks(model), torch.inference_mode():
        torch.onnx.export(graph, example, str(tmp), input_names=["audio_signal", "length"],
                          output_names=["logprobs", "encoded_lengths"], opset_version=17, dynamo=False,
                          dynamic_axes={"audio_signal": {0: "batch", 2: "frames"}, "length": {0: "batch"},
                                        "logprobs": {0: "batch", 1: "encoded_frames"},
                                        "encoded_lengths": {0: "batch"}})
    return target


def nemo_log_probs(model, clip):
    """NeMo's own per-frame log-probabilities of one clip (its preprocessor, encoder, decoder)."""
    import torch

    model.eval()  # NeMo's transcribe() leaves the encoder in training mode (measured with nemo 3.0)
    with torch.inference_mode():
        signal = torch.from_numpy(clip).unsqueeze(0)
        log_probs, encoded_len, _ = model(input_signal=signal, input_signal_length=torch.tensor([signal.shape[1]]))
    return log_probs[0, : int(encoded_len[0])].numpy()


def check_onnx(model, export_dir: Path, clips: list[tuple[str, object]]) -> dict:
    """NeMo vs the ONNX predictor (tasks/asr/onnx_infer.py, what `serve` runs) on the same clips: max
    log-probability difference, greedy transcripts one at a time and as one padded batch."""
    import numpy as np

    from tasks.asr.onnx_infer import load_export
    from tasks.asr.transcribe import transcribe_arrays

    model.eval()  # no dither, no SpecAugment: NeMo's deterministic inference path
    predictor = load_export(export_dir, prefer_gpu=False)
    audio = [c for _, c in clips]
    nemo_texts = transcribe_arrays(model, audio, batch_size=1)
    batched_texts = predictor.transcribe_batch(audio)
    batch_lp, batch_len = predictor.log_probs(audio)
    items, diff, batch_diff = [], 0.0, 0.0
    for i, ((path, clip), nemo_text) in enumerate(zip(clips, nemo_texts)):
        ref = nemo_log_probs(model, clip)
        one_lp, one_len = predictor.log_probs([clip])
        n = min(len(ref), one_len[0])
        d = float(np.abs(ref[:n] - one_lp[0, :n]).max()) if n else 0.0
        bd = float(np.abs(ref[:n] - batch_lp[i, : min(n, batch_len[i])]).max()) if n else 0.0
        diff, batch_diff = max(diff, d), max(batch_diff, bd)
        items.append({"audio_filepath": path, "nemo": nemo_text, "onnx": predictor.transcribe(clip),
                      "onnx_batched": batched_texts[i], "frames": int(len(ref)), "onnx_frames": int(one_len[0]),
                      "max_abs_logprob_diff": sig(d)})
    same = sum(it["nemo"] == it["onnx"] for it in items)
    same_batched = sum(it["nemo"] == it["onnx_batched"] for it in items)
    frames_equal = all(it["frames"] == it["onnx_frames"] for it in items)
    passed = same == same_batched == len(items) and frames_equal and max(diff, batch_diff) <= LOGPROB_TOLERANCE
    return {"task": "asr", "framework": "NeMo", "runtime": "onnxruntime", "n_inputs": len(items),
            "max_abs_diff": {"logprobs": sig(diff), "logprobs_batched": sig(batch_diff)},
            "agreement": {"transcripts": agreement(same, len(items)), "transcripts_batched": agreement(same_batched, len(items))},
            "tolerances": {"logprobs": LOGPROB_TOLERANCE, "transcripts": "identical"},
            "passed": passed, "items": items,
            # the fields earlier callers read
            "n_utts": len(items), "identical": same == len(items)}


def noise_clips(sample_rate: int, n: int = 2, seconds: float = 2.0) -> list[tuple[str, object]]:
    """Without test audio the check still compares NeMo and ONNX outputs, on seeded noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [(f"noise-{i}", (0.05 * rng.standard_normal(int(sample_rate * seconds))).astype("float32")) for i in range(n)]


def export_model(model_path: Path, out_dir: Path, check_audio: list[str], onnx: bool = True, log=None) -> dict:
    """Write out_dir/asr_model.nemo (+ .onnx, model_config.yaml, vocabulary.json, export_check.json)."""
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
        check = check_onnx(model, out_dir, clips)
        check_path = write_check(out_dir, check)
        (out_dir / "onnx_check.json").unlink(missing_ok=True)  # an older export's check, replaced by export_check.json
        summary.update(onnx=str(onnx_path), onnx_check={k: check[k] for k in ("n_inputs", "max_abs_diff", "agreement", "passed")})
        if not check["passed"]:
            bad = next((p for p in check["items"] if len({p["nemo"], p["onnx"], p["onnx_batched"]}) > 1), check["items"][0])
            raise HackathonError(f"ONNX export of {model_path} disagrees with NeMo on {bad['audio_filepath']}: "
                                 f"NeMo {bad['nemo']!r} vs ONNX {bad['onnx']!r} (batched {bad['onnx_batched']!r}), "
                                 f"max log-prob diff {check['max_abs_diff']} (see {check_path}).",
                                 fix="Report it with the export_check.json; deploy the .nemo meanwhile.")
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
    if summary["onnx_check"]:
        from hackathon.core.atomic import read_json
        from hackathon.core.export_check import CHECK_NAME, record_check

        check = read_json(ctx.run_dir / EXPORT_DIR / CHECK_NAME)
        n = check["n_inputs"]
        same = sum(it["nemo"] == it["onnx"] for it in check["items"])
        record_check(ctx, check, {"asr_export_max_logprob_diff": check["max_abs_diff"]["logprobs"],
                                  "asr_export_transcript_agreement": round(same / n, 4) if n else None})


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
