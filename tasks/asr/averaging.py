"""Checkpoint averaging (WeNet's average_model): the element-wise mean of the best k checkpoints by
validation CER. Shared by both ASR backends' export stages (NeMo: Lightning state dicts;
whisper_lora: the merged weights of the LoRA epochs)."""

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
