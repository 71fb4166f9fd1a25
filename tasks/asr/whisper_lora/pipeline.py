"""`hackathon run asr backend=whisper_lora`: prepare -> model -> train -> evaluate -> export -> score.

prepare (manifests) and score (CER/WER, report assets from predictions.jsonl) are the NeMo backend's
stages; model/train/evaluate/export are this folder's:
- model: base weights (packaged:base / local folder / Hub) as a transformers folder, encoder outputs
  cached per clip, zero-shot CER on the held-out split (`zero_shot_cer`) — the baseline.
- train: LoRA (peft) on the decoder (frozen encoder: on the cached states) on the one engine
  (hackathon/core/training.py: last.ckpt + best-*.ckpt by val CER, resume after kill -9).
- evaluate: the best adapter transcribes the test split -> predictions.jsonl.
- export: adapter, merged transformers model, CTranslate2 int8 (faster-whisper), optional averaging.
"""

from __future__ import annotations

from hackathon.core.runner import Stage


def build_whisper_stages(cfg) -> list[Stage]:
    from tasks.asr.evaluate import score_stage
    from tasks.asr.prepare import prepare_stage, source_inputs
    from tasks.asr.whisper_lora.evaluate import evaluate_stage
    from tasks.asr.whisper_lora.export import export_stage
    from tasks.asr.whisper_lora.model import model_stage
    from tasks.asr.whisper_lora.train import train_stage

    return [
        Stage("prepare", prepare_stage, "data", config_keys=("data",), inputs=source_inputs),
        Stage("model", model_stage, "model", config_keys=("model", "evaluate.batch_size")),
        Stage("train", train_stage, "train", trainer="trainer",
              config_keys=("seed", "model", "lora", "trainer", "evaluate.batch_size", "export.average_best_k")),
        Stage("evaluate", evaluate_stage, "evaluate", config_keys=("evaluate.batch_size",)),
        Stage("export", export_stage, "export", config_keys=("export",)),
        Stage("score", score_stage, "report", config_keys=("evaluate.worst_n",)),
    ]
