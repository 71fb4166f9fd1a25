"""In-process ASR from a run's ONNX export: what the export check measures and what `hackathon serve` runs.

Reads only <run>/export/: asr_model.onnx (encoder + CTC decoder), model_config.yaml (the preprocessor
settings) and vocabulary.json. Features come from NeMo's own AudioToMelSpectrogramPreprocessor built from
that config (eval mode: no dither), so they are the model's features by construction. A batch is padded
to its longest clip and goes through ONE onnxruntime call (what Triton's dynamic batching relies on); each
clip's frames are cut back to its own length before greedy CTC decoding.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hackathon.core.errors import HackathonError

EXPORT_FIX = "Run `hackathon run asr --only export` on that run dir (export.onnx=true), or pick a finished ASR run."


def greedy_ctc_text(log_probs: np.ndarray, vocabulary: list[str], length: int | None = None) -> str:
    """Best path: argmax per frame, merge repeats, drop the blank (index len(vocabulary))."""
    ids = log_probs.argmax(-1)[: length if length is not None else None]
    blank = len(vocabulary)
    out, prev = [], None
    for i in ids.tolist():
        if i != prev and i != blank:
            out.append(vocabulary[i])
        prev = i
    return "".join(out)


class AsrPredictor:
    """`transcribe(audio)` / `transcribe_batch([audio, ...])` with an exported CTC model."""

    def __init__(self, export_dir: Path, session, preprocessor, vocabulary: list[str], sample_rate: int):
        self.export_dir = export_dir
        self.session = session
        self.preprocessor = preprocessor
        self.vocabulary = vocabulary
        self.sample_rate = sample_rate
        self._input_names = {i.name for i in session.get_inputs()}

    def features(self, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Padded log-mel features [batch, features, frames] and each clip's frame count."""
        import torch

        lengths = [len(c) for c in clips]
        batch = np.zeros((len(clips), max(lengths)), dtype=np.float32)
        for i, clip in enumerate(clips):
            batch[i, : len(clip)] = clip
        with torch.inference_mode():
            feats, feat_len = self.preprocessor(input_signal=torch.from_numpy(batch),
                                                length=torch.tensor(lengths, dtype=torch.int64))
        return feats.numpy(), feat_len.numpy()

    def log_probs(self, clips: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """Per-frame log-probabilities [batch, frames, vocabulary + blank] and each clip's valid frames."""
        feats, feat_len = self.features(clips)
        feed = {"audio_signal": feats}
        if "length" in self._input_names:
            feed["length"] = feat_len.astype(np.int64)
        outputs = self.session.run(None, feed)
        out = outputs[0]
        if len(outputs) > 1:  # encoded_lengths: each clip's own frame count after subsampling
            return out, [int(n) for n in outputs[1]]
        factor = max(1, round(feats.shape[2] / out.shape[1]))  # older exports: the encoder's time subsampling
        return out, [min(out.shape[1], math.ceil(int(n) / factor)) for n in feat_len]

    def transcribe_batch(self, clips: list[np.ndarray]) -> list[str]:
        if not clips:
            return []
        clips = [self._check(c, i) for i, c in enumerate(clips)]
        out, lengths = self.log_probs(clips)
        return [greedy_ctc_text(lp, self.vocabulary, n) for lp, n in zip(out, lengths)]

    def transcribe(self, audio: np.ndarray, sample_rate: int = 16000) -> str:
        if sample_rate != self.sample_rate:
            from data_tools.audio import resample

            audio = resample(np.asarray(audio, dtype=np.float32), int(sample_rate), self.sample_rate)
        return self.transcribe_batch([audio])[0]

    def _check(self, clip, index: int) -> np.ndarray:
        clip = np.asarray(clip, dtype=np.float32)
        if clip.ndim != 1:
            raise HackathonError(f"clip {index}: audio must be mono 1-D samples, got shape {clip.shape}.",
                                 fix="Down-mix to one channel (data_tools.audio.to_mono) before transcribing.")
        if clip.size == 0:
            raise HackathonError(f"clip {index}: no audio samples.", fix="Send a non-empty recording.")
        if not np.isfinite(clip).all():
            raise HackathonError(f"clip {index}: audio contains NaN or infinite samples.", fix="Send real audio samples.")
        return clip


def load(run_dir: str | Path, prefer_gpu: bool = True) -> AsrPredictor:
    """The predictor of an ASR run dir (reads <run>/export/ only)."""
    from tasks.asr.export import EXPORT_DIR

    return load_export(Path(run_dir) / EXPORT_DIR, prefer_gpu=prefer_gpu)


def load_export(export_dir: str | Path, prefer_gpu: bool = True) -> AsrPredictor:
    """The predictor of an export folder (a run's export/, or `hackathon asr export --out DIR`)."""
    from omegaconf import OmegaConf

    from hackathon.core.atomic import read_json
    from hackathon.core.onnx_session import create_session
    from tasks.asr.export import ONNX_NAME

    export_dir = Path(export_dir)
    for name in (ONNX_NAME, "model_config.yaml", "vocabulary.json"):
        if not (export_dir / name).is_file():
            raise HackathonError(f"{export_dir / name} not found: no ASR ONNX export in {export_dir}.", fix=EXPORT_FIX)
    session = create_session(export_dir / ONNX_NAME, EXPORT_FIX, prefer_gpu=prefer_gpu)
    cfg = OmegaConf.load(export_dir / "model_config.yaml")
    vocabulary = list(read_json(export_dir / "vocabulary.json")["vocabulary"])
    return AsrPredictor(export_dir, session, build_preprocessor(cfg), vocabulary,
                        int(cfg.get("sample_rate") or cfg.preprocessor.sample_rate))


def build_preprocessor(model_cfg):
    """NeMo's preprocessor from the exported model config, in eval mode (deterministic: no dither)."""
    from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor

    pre = AudioToMelSpectrogramPreprocessor.from_config_dict(model_cfg.preprocessor)
    return pre.eval()
