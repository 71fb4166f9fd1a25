"""hackathon/core/training.py on a toy Lightning model: resume, fresh start, duplicates, torn files, OOM back-off."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from hackathon.core.runner import RunContext  # noqa: E402

pytestmark = pytest.mark.slow  # trains (toy) Lightning models
from hackathon.core.training import LAST_NAME, find_resume_checkpoint, fit_resumable  # noqa: E402


class Toy(pl.LightningModule):
    """Linear regression; optionally raises a fake CUDA OOM in one epoch at one batch size."""

    def __init__(self, batch_size: int, oom_at_epoch: int | None = None, oom_batch_size: int | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.batch_size, self.oom_at_epoch, self.oom_batch_size = batch_size, oom_at_epoch, oom_batch_size

    def _loader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)),
                                           batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def training_step(self, batch, _):
        if self.current_epoch == self.oom_at_epoch and self.batch_size == self.oom_batch_size:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (fake)")
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", ((self.layer(x) - y) ** 2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def make_ctx(run_dir, resuming: bool, config_hash: str = "cfg-a") -> RunContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(task="toy", run_dir=run_dir, cfg=None, meta={"config_hash": config_hash}, stage="train",
                      resuming=resuming)


def fit(ctx, epochs: int, **toy):
    return fit_resumable(ctx, lambda trainer, bs: Toy(bs, **toy), {"max_epochs": epochs, "enable_progress_bar": False},
                         batch_size=16, monitor="val_loss")


def test_interrupted_stage_resumes_from_last_checkpoint(tmp_path):
    first = fit(make_ctx(tmp_path, resuming=False), 2)
    assert first.resumed_from is None and first.last_checkpoint.name == LAST_NAME
    ctx = make_ctx(tmp_path, resuming=True)
    second = fit(ctx, 4)
    assert second.resumed_from["epochs_done"] == 2 and second.resumed_from["global_step"] == 4
    assert ctx.meta["stages"]["train"]["resumed_from"]["epochs_done"] == 2
    assert second.trainer.current_epoch == 4 and second.trainer.global_step == 8  # 2 more epochs, not 4
    ckpts = sorted(p.name for p in second.checkpoint_dir.glob("*.ckpt"))
    assert ckpts == sorted([LAST_NAME, second.best_checkpoint.name])  # one last, one best
    assert sorted(p.name for p in (tmp_path / "logs" / "fit").iterdir()) == ["attempt-1", "attempt-2"]


class WorseLater(Toy):
    """Validation score 0.1 in epoch 1, then 0.5: the best checkpoint is epoch 1's."""

    def validation_step(self, batch, _):
        self.log("val_loss", torch.tensor(0.1 if self.current_epoch == 0 else 0.5))


def test_resumed_fit_remembers_the_best_of_the_epochs_before_the_kill(tmp_path):
    run = lambda resuming, epochs: fit_resumable(  # noqa: E731
        make_ctx(tmp_path, resuming), lambda trainer, bs: WorseLater(bs), {"max_epochs": epochs},
        batch_size=16, monitor="val_loss", keep_best=2)
    run(False, 1)
    second = run(True, 2)  # last.ckpt of epoch 1 holds the best callback's state of epoch 1
    assert second.best_checkpoint.name.startswith("best-epoch000") and second.best_score == pytest.approx(0.1)
    assert len(list(second.checkpoint_dir.glob("best-*.ckpt"))) == 2


def test_rerun_with_new_inputs_starts_fresh_and_keeps_old_checkpoints_aside(tmp_path):
    fit(make_ctx(tmp_path, resuming=False), 1)
    again = fit(make_ctx(tmp_path, resuming=False), 1)  # stage re-run (changed inputs): not a resume
    assert again.resumed_from is None
    assert len(list((tmp_path / "checkpoints").glob("fit.stale-*"))) == 1
    other_cfg = fit(make_ctx(tmp_path, resuming=True, config_hash="cfg-b"), 1)  # interrupted, but other config
    assert other_cfg.resumed_from is None


def test_duplicate_and_torn_last_checkpoints(tmp_path):
    result = fit(make_ctx(tmp_path, resuming=False), 2)
    ckpt_dir = result.checkpoint_dir
    shutil.copyfile(ckpt_dir / LAST_NAME, ckpt_dir / "last-v1.ckpt")  # Lightning's version counter
    shutil.copyfile(ckpt_dir / LAST_NAME, ckpt_dir / "epoch=1-last.ckpt")  # NeMo exp_manager style
    assert find_resume_checkpoint(ckpt_dir) == ckpt_dir / LAST_NAME
    assert sorted(p.name for p in ckpt_dir.glob("*last*.ckpt")) == [LAST_NAME]
    (ckpt_dir / LAST_NAME).write_bytes(b"torn")  # a non-atomic writer killed mid-write
    assert find_resume_checkpoint(ckpt_dir) == result.best_checkpoint


def test_cuda_oom_halves_batch_and_resumes_from_last_checkpoint(tmp_path):
    ctx = make_ctx(tmp_path, resuming=False)
    result = fit(ctx, 3, oom_at_epoch=1, oom_batch_size=16)
    entry = ctx.meta["stages"]["train"]
    assert [(b["from"], b["to"]) for b in entry["oom_backoff"]] == [(16, 8)]
    assert entry["batch_size"] == 8 and result.batch_size == 8
    assert result.resumed_from["epochs_done"] == 1  # epoch 0 kept, not redone
    assert result.trainer.current_epoch == 3


def test_time_safety_cut_is_reported_and_a_step_budget_is_not(tmp_path, capsys):
    """max_time is only a safety: when it ends a fit before its step budget, the result and meta say so."""
    ctx = make_ctx(tmp_path / "cut", resuming=False)
    cut = fit_resumable(ctx, lambda trainer, bs: Toy(bs), {"max_steps": 10**7, "max_epochs": -1, "max_time": {"seconds": 1},
                                                        "enable_progress_bar": False}, batch_size=16)
    assert cut.cut_by_time and 0 < cut.trainer.global_step < 10**7
    assert ctx.meta["stages"]["train"]["cut_by_time"] is True
    assert "CUT SHORT" in capsys.readouterr().err
    ctx = make_ctx(tmp_path / "budget", resuming=False)
    done = fit_resumable(ctx, lambda trainer, bs: Toy(bs), {"max_steps": 6, "max_epochs": -1, "max_time": "00:01:00:00",
                                                         "enable_progress_bar": False}, batch_size=16)
    assert not done.cut_by_time and done.trainer.global_step == 6
