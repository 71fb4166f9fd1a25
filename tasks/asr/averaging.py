"""Checkpoint averaging (WeNet's average_model): the element-wise mean of the best k checkpoints by
validation CER, read from the best-*.ckpt files hackathon.core.training keeps. Shared by both ASR
backends (NeMo: Lightning state dicts; whisper_lora: the merged weights of the LoRA adapters)."""

from __future__ import annotations

from typing import Mapping, Sequence


def mean_state_dict(states: Sequence[Mapping]) -> dict:
    """Mean of float tensors key by key (integer buffers such as BatchNorm's counters: from the first)."""
    import torch

    if not states:
        raise ValueError("no checkpoints to average")
    out = {}
    for key, first in states[0].items():
        if torch.is_tensor(first) and first.is_floating_point():
            acc = torch.zeros_like(first, dtype=torch.float64)
            for s in states:
                acc += s[key].to(torch.float64)
            out[key] = (acc / len(states)).to(first.dtype)
        else:
            out[key] = first
    return out


AVERAGED_NEMO = "export/asr_model_averaged.nemo"


def best_checkpoints(ckpt_dir, k: int, monitor: str = "val_wer") -> list[tuple[float, object]]:
    """[(score, path)] of the best k `best-*.ckpt` files hackathon.core.training kept (score from the
    name; ties: the earlier epoch). NeMo logs val_wer (its CER here), whisper_lora val_cer."""
    import re
    from pathlib import Path

    scored = []
    for p in Path(ckpt_dir).glob("best-*.ckpt"):
        found = re.search(rf"{monitor}([0-9.]+)\.ckpt$", p.name)
        if found:
            scored.append((float(found.group(1).rstrip(".")), p))
    return sorted(scored, key=lambda t: (t[0], t[1].name))[:k]


def average_stage(ctx) -> None:
    """NeMo backend, `export.average_best_k=k`: mean of the best k checkpoints' weights ->
    export/asr_model_averaged.nemo; test CER before (the evaluate stage's model) and after."""
    import torch

    from hackathon.core.atomic import atomic_path
    from tasks.asr.evaluate import aggregate, read_predictions, score_predictions
    from tasks.asr.model import restore_model
    from tasks.asr.prepare import read_summary
    from tasks.asr.train import TRAINED_MODEL
    from tasks.asr.transcribe import transcribe_items

    k = int(ctx.cfg.export.get("average_best_k", 0) or 0)
    if k <= 0:
        return
    chosen = best_checkpoints(ctx.checkpoints_dir / "fit", k)
    if not chosen:
        ctx.log.warning("export.average_best_k=%d but no best-*.ckpt in %s: nothing averaged", k, ctx.checkpoints_dir / "fit")
        return
    states = [torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for _, p in chosen]
    model = restore_model(ctx.run_dir / TRAINED_MODEL)
    model.load_state_dict(mean_state_dict(states))
    rows, _ = read_predictions(ctx.run_dir)
    items = [{k2: r.get(k2) for k2 in ("audio_filepath", "text", "speaker")} for r in rows]
    results, _ = transcribe_items(model, items, int(ctx.cfg.evaluate.batch_size))
    after = aggregate(score_predictions(results, read_summary(ctx.run_dir)["language"]))["cer"]
    with atomic_path(ctx.path(AVERAGED_NEMO), suffix=".nemo") as tmp:
        model.save_to(str(tmp))
    metrics = {"average_best_k": len(chosen), "averaged_val_cer": [round(s, 4) for s, _ in chosen],
               "cer_before_average": aggregate(rows)["cer"], "cer_after_average": after}
    ctx.write_metrics(metrics)
    ctx.record(**{key: v for key, v in metrics.items() if not isinstance(v, list)})
    ctx.log.info("averaged %d checkpoints: test CER %.4f -> %.4f", len(chosen), metrics["cer_before_average"], after)
