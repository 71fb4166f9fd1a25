"""OOM back-off (hackathon/core/oom.py): on CUDA out-of-memory halve the batch size, resume from the last
checkpoint, record each back-off in meta.json; give up with a fix below batch size 1."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from hackathon.core.errors import HackathonError
from hackathon.core.oom import is_cuda_oom, run_with_oom_backoff
from hackathon.core.runner import RunContext


class OutOfMemoryError(RuntimeError):
    """Same name as torch.cuda.OutOfMemoryError: the helper recognises the type by name."""


def make_ctx(tmp_path) -> RunContext:
    ctx = RunContext(task="asr", run_dir=tmp_path, cfg=OmegaConf.create({}), meta={"stages": {}})
    ctx.stage = "train"
    return ctx


def stage_meta(tmp_path) -> dict:
    return json.loads((tmp_path / "meta.json").read_text())["stages"]["train"]


def checkpointed_trainer(tmp_path, fits_at: int, total_steps: int = 10, oom_at_step: int = 3):
    """A trainer with the contract every real one has: it resumes from its last checkpoint (a file).
    Batch sizes above `fits_at` run out of memory at `oom_at_step`, after saving earlier steps."""
    ckpt = tmp_path / "last.ckpt"
    calls = []

    def train_once(batch_size: int) -> int:
        step = int(ckpt.read_text()) if ckpt.exists() else 0
        calls.append((batch_size, step))
        while step < total_steps:
            if batch_size > fits_at and step >= oom_at_step:
                raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            step += 1
            ckpt.write_text(str(step))
        return step

    return train_once, calls


def test_halves_until_it_fits_resuming_from_the_checkpoint_and_records_it(tmp_path):
    ctx = make_ctx(tmp_path)
    train_once, calls = checkpointed_trainer(tmp_path, fits_at=4)
    assert run_with_oom_backoff(ctx, 16, train_once) == 10
    assert calls == [(16, 0), (8, 3), (4, 3)]  # progress before the OOM is kept, not redone
    recorded = stage_meta(tmp_path)
    assert [(b["from"], b["to"]) for b in recorded["oom_backoff"]] == [(16, 8), (8, 4)]
    assert recorded["batch_size"] == 4


def test_gives_up_below_one_with_a_fix(tmp_path):
    ctx = make_ctx(tmp_path)
    train_once, calls = checkpointed_trainer(tmp_path, fits_at=0, oom_at_step=0)
    with pytest.raises(HackathonError) as err:
        run_with_oom_backoff(ctx, 2, train_once)
    assert [bs for bs, _ in calls] == [2, 1]
    assert "batch size 1" in err.value.message and "trainer.precision" in err.value.fix
    assert isinstance(err.value.__cause__, OutOfMemoryError)
    assert [(b["from"], b["to"]) for b in stage_meta(tmp_path)["oom_backoff"]] == [(2, 1)]


def test_other_errors_pass_through_untouched(tmp_path):
    ctx = make_ctx(tmp_path)
    calls = []

    def train_once(batch_size):
        calls.append(batch_size)
        raise ValueError("bad manifest line 3")

    with pytest.raises(ValueError, match="manifest"):
        run_with_oom_backoff(ctx, 8, train_once)
    assert calls == [8] and not (tmp_path / "meta.json").exists()


def test_back_offs_of_an_earlier_attempt_are_kept_on_resume(tmp_path):
    ctx = make_ctx(tmp_path)
    ctx.meta["stages"]["train"] = {"oom_backoff": [{"from": 32, "to": 16, "at": "earlier"}]}
    train_once, _ = checkpointed_trainer(tmp_path, fits_at=8)
    run_with_oom_backoff(ctx, 16, train_once)
    assert [(b["from"], b["to"]) for b in stage_meta(tmp_path)["oom_backoff"]] == [(32, 16), (16, 8)]


def test_recognises_the_forms_cuda_oom_takes():
    import torch

    assert is_cuda_oom(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_cuda_oom(OutOfMemoryError("x"))
    assert is_cuda_oom(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total)"))
    assert is_cuda_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    try:  # Lightning re-raises inside its own exception: the cause chain is searched
        try:
            raise OutOfMemoryError("CUDA out of memory")
        except OutOfMemoryError as inner:
            raise RuntimeError("training loop failed") from inner
    except RuntimeError as wrapped:
        assert is_cuda_oom(wrapped)
    assert not is_cuda_oom(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_cuda_oom(MemoryError("host RAM"))
