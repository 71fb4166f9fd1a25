"""Evaluate stage (whisper_lora): the best adapter transcribes the held-out test split.

Writes predictions.jsonl in the NeMo backend's format (tasks/asr/evaluate.py: reference, prediction,
edits per utterance), so the shared score stage computes CER/WER and the report's worst utterances.
"""

from __future__ import annotations

from hackathon.core.atomic import atomic_write_jsonl


def evaluate_stage(ctx) -> None:
    from tasks.asr.evaluate import PREDICTIONS_FILE, score_predictions
    from tasks.asr.prepare import read_summary
    from tasks.asr.whisper_lora.decode import load_tokens
    from tasks.asr.whisper_lora.model import base_dir, transcribe_split, use_cuda
    from tasks.asr.whisper_lora.train import load_trained

    model = load_trained(ctx, cuda=use_cuda(ctx.cfg.trainer))
    tokens = load_tokens(base_dir(ctx.run_dir))
    rows = score_predictions(transcribe_split(ctx, model, tokens, "test", int(ctx.cfg.evaluate.batch_size)),
                             read_summary(ctx.run_dir)["language"])
    atomic_write_jsonl(ctx.path(PREDICTIONS_FILE), rows)
