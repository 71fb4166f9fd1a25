"""CUDA out-of-memory back-off, shared by every trainer (ASR, TTS, torch detect).

On OOM: halve the batch size, let the trainer resume from its last checkpoint, record it in meta.json;
give up (with a fix) when the batch size would drop below `min_batch_size`.
"""

from __future__ import annotations

import gc
import time
from typing import Callable, TypeVar

from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger

T = TypeVar("T")
log = get_logger("hackathon.oom")


def is_cuda_oom(exc: BaseException) -> bool:
    """True for torch.cuda.OutOfMemoryError and the RuntimeError forms older code paths raise."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ == "OutOfMemoryError":
            return True
        msg = str(exc)
        if "CUDA out of memory" in msg or "CUBLAS_STATUS_ALLOC_FAILED" in msg or "CUDNN_STATUS_ALLOC_FAILED" in msg:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _free_cuda_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def run_with_oom_backoff(ctx, batch_size: int, train_once: Callable[[int], T], min_batch_size: int = 1,
                         what: str = "training") -> T:
    """Call `train_once(batch_size)`; on CUDA OOM halve the batch size and call it again.

    `train_once` must resume from its own last checkpoint (all our trainers do), so no progress beyond
    the last checkpoint is lost. Each back-off is recorded in the current stage's meta.json entry as
    `oom_backoff: [{from, to, at}]`, and the batch size that finally worked as `batch_size`.
    """
    history = list(ctx.meta.get("stages", {}).get(ctx.stage or "_run", {}).get("oom_backoff", []))
    while True:
        try:
            result = train_once(batch_size)
            ctx.record(batch_size=batch_size)
            return result
        except BaseException as exc:
            if not is_cuda_oom(exc):
                raise
            smaller = batch_size // 2
            if smaller < min_batch_size:
                raise HackathonError(
                    f"CUDA out of memory during {what} even at batch size {batch_size}.",
                    fix="Free the GPU (`hackathon gpus`, nvidia-smi), use a smaller model or shorter clips "
                        "(e.g. data.max_duration=...), or enable AMP (trainer.precision=16-mixed).") from exc
            log.warning("CUDA out of memory during %s at batch size %d: retrying at %d from the last checkpoint",
                        what, batch_size, smaller)
            history.append({"from": batch_size, "to": smaller, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            ctx.record(oom_backoff=history)
            batch_size = smaller
            _free_cuda_memory()
