"""Resumable, kill -9 safe Lightning fit, shared by every NeMo trainer (ASR, TTS).

One call does what the team used to do by hand plus what went wrong in the notebooks:

    from hackathon.core.training import fit_resumable, load_best_weights

    def build_model(trainer, batch_size):          # called once per attempt (OOM back-off re-calls it)
        model = EncDecCTCModel.restore_from(init_nemo, trainer=trainer)
        model.setup_training_data(train_ds_cfg_with(batch_size))
        model.setup_validation_data(val_ds_cfg)
        model.setup_optimization(optim_cfg)
        return model

    result = fit_resumable(ctx, build_model, ctx.cfg.trainer, batch_size=ctx.cfg.trainer.batch_size,
                           monitor="val_wer", mode="min")
    load_best_weights(result.model, result)         # optional: best-by-monitor instead of last weights

What it guarantees
- Checkpoints in `ctx.checkpoints_dir/<name>/`: exactly one `last.ckpt` (written at the end of EVERY
  training epoch) and one `best-...ckpt` (best by `monitor`). Writes are atomic (temp file + fsync +
  rename), so kill -9 at any moment leaves a loadable checkpoint. Lightning's version counter is off
  and stray duplicates (`last-v1.ckpt`, NeMo-style `*-last.ckpt`) are cleaned up, so NeMo's
  "multiple last.ckpt" failure cannot happen.
- Resume: when the runner re-enters an interrupted stage (`ctx.resuming`) the fit continues from
  `last.ckpt` (model, optimizer, scheduler, epoch/step) and `resumed_from` {checkpoint,
  epochs_done, global_step} is recorded in the stage's meta.json entry. A stage that re-runs because its inputs or
  config changed starts fresh: old checkpoints are moved aside to `<name>.stale-<time>/`, never reused.
  The `key` (default: the run's config hash) guards against resuming checkpoints of a different config.
- CUDA OOM: the fit runs inside hackathon.core.oom.run_with_oom_backoff; each retry rebuilds the model at half
  the batch size and resumes from `last.ckpt`.
- Trainer: the spec's `trainer:` section is passed to lightning.pytorch.Trainer (devices, num_nodes,
  max_epochs, ...). `precision: auto` = AMP (16-mixed) on GPU, 32-true on CPU. Without a GPU and with
  `accelerator: auto` the fit runs on one CPU device whatever `devices` says (and logs that);
  `accelerator: cpu` with devices > 1 is DDP over gloo. Loss curves: CSV under
  `ctx.logs_dir/<name>/attempt-<n>/metrics.csv` (one folder per start, global steps continue).

torch/Lightning are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import re
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from hackathon.core.atomic import atomic_path, atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger
from hackathon.core.oom import run_with_oom_backoff
from hackathon.core.progress import lightning_callback

log = get_logger("hackathon.training")

LAST_NAME = "last.ckpt"
# Keys of a spec's trainer section that are ours (the one spec vocabulary), not lightning.pytorch.Trainer's.
ENGINE_KEYS = ("batch_size", "lr", "weight_decay", "warmup_steps")
FIT_STATE_FILE = "fit.json"  # the key the checkpoints in this folder belong to
# Duplicates of the last checkpoint that Lightning's version counter or NeMo's exp_manager create.
_DUPLICATE_LAST = re.compile(r"(^last-v\d+\.ckpt$)|(.+-last\.ckpt$)|(.+-last-v\d+\.ckpt$)")


@dataclass
class FitResult:
    """What a finished fit left behind (paths are absolute)."""

    model: Any  # the LightningModule after the fit (last weights; see load_best_weights)
    trainer: Any
    checkpoint_dir: Path
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_score: float | None
    batch_size: int
    seconds: float  # wall time of the fit calls in this process (excludes earlier attempts killed)
    resumed_from: dict | None = None
    attempts: list[dict] = field(default_factory=list)
    cut_by_time: bool = False  # the trainer.max_time safety stopped it before its step/epoch budget


# ---------------------------------------------------------------- checkpoint folder housekeeping

def is_loadable_checkpoint(path: Path) -> bool:
    """Cheap integrity check: torch.save writes a zip archive; a torn/empty file is not one."""
    try:
        return path.is_file() and path.stat().st_size > 0 and zipfile.is_zipfile(path)
    except OSError:
        return False


def clean_duplicate_last(ckpt_dir: Path) -> None:
    """Keep one `last.ckpt`. If only NeMo/Lightning-style duplicates exist, the newest becomes last.ckpt."""
    dups = sorted((p for p in ckpt_dir.glob("*.ckpt") if _DUPLICATE_LAST.match(p.name)),
                  key=lambda p: p.stat().st_mtime)
    if not dups:
        return
    last = ckpt_dir / LAST_NAME
    newest = dups[-1]
    if is_loadable_checkpoint(newest) and (not last.exists() or newest.stat().st_mtime > last.stat().st_mtime):
        log.info("using %s as %s (duplicate last checkpoints found)", newest.name, LAST_NAME)
        newest.replace(last)
        dups = dups[:-1]
    for p in dups:
        log.info("removing duplicate last checkpoint %s", p)
        p.unlink(missing_ok=True)


def find_resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """last.ckpt if loadable, else the newest loadable *.ckpt, else None."""
    if not ckpt_dir.is_dir():
        return None
    clean_duplicate_last(ckpt_dir)
    last = ckpt_dir / LAST_NAME
    if is_loadable_checkpoint(last):
        return last
    if last.exists():
        log.warning("%s is not a loadable checkpoint (interrupted write?): looking for another one", last)
    others = sorted((p for p in ckpt_dir.glob("*.ckpt") if is_loadable_checkpoint(p)),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    return others[0] if others else None


def _remove_superseded_best(ckpt_dir: Path, best: Path | None, keep: list[Path] | None = None) -> None:
    """A resumed ModelCheckpoint does not know the best files of earlier attempts: keep only the best
    (and the callback's other top-k files when `keep_best` > 1)."""
    if best is None:
        return
    wanted = {best.resolve(), *(Path(p).resolve() for p in (keep or []))}
    for p in ckpt_dir.glob("best-*.ckpt"):
        if p.resolve() not in wanted:
            p.unlink(missing_ok=True)


def _move_aside(ckpt_dir: Path, why: str) -> None:
    stamp = time.strftime('%Y%m%d-%H%M%S')
    stale = ckpt_dir.with_name(f"{ckpt_dir.name}.stale-{stamp}")
    n = 1
    while stale.exists():
        n += 1
        stale = ckpt_dir.with_name(f"{ckpt_dir.name}.stale-{stamp}-{n}")
    log.info("not resuming from %s (%s): moved to %s", ckpt_dir, why, stale)
    ckpt_dir.rename(stale)


def prepare_checkpoint_dir(ctx, ckpt_dir: Path, key: str) -> Path | None:
    """Decide fresh vs resume for the first attempt. Returns the checkpoint to resume from, or None."""
    state = read_json(ckpt_dir / FIT_STATE_FILE, default=None) if ckpt_dir.is_dir() else None
    has_ckpts = ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt"))
    if has_ckpts:
        if not ctx.resuming:
            _move_aside(ckpt_dir, "the stage is starting over: its inputs or config changed, or --force")
        elif not state or state.get("key") != key:
            _move_aside(ckpt_dir, "the checkpoints belong to a different config")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ckpt_dir / FIT_STATE_FILE, {"key": key})
    return find_resume_checkpoint(ckpt_dir)


def checkpoint_position(path: Path) -> dict:
    """{checkpoint, epoch, global_step} of a Lightning checkpoint (for meta.json)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    epoch = ckpt.get("epoch")
    return {"checkpoint": str(path), "epochs_done": None if epoch is None else epoch + 1,
            "global_step": ckpt.get("global_step")}


# ---------------------------------------------------------------- trainer

def _atomic_checkpoint_io():
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """torch.save into a temp file next to the target, fsync, rename: never a torn checkpoint."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)

    return AtomicCheckpointIO()


def trainer_settings(trainer_cfg: Mapping | Any) -> dict:
    """Spec `trainer:` section -> lightning.pytorch.Trainer kwargs, with device/AMP choices resolved."""
    import torch
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(trainer_cfg, resolve=True) if OmegaConf.is_config(trainer_cfg) \
        else dict(trainer_cfg or {})
    for key in ENGINE_KEYS:
        settings.pop(key, None)
    has_gpu = torch.cuda.is_available()
    accelerator = settings.get("accelerator", "auto")
    if accelerator in ("gpu", "cuda") and not has_gpu:
        raise HackathonError("trainer.accelerator is 'gpu' but no CUDA GPU is visible.",
                             fix="Use trainer.accelerator=auto (or cpu), or check `hackathon gpus` / nvidia-smi.")
    on_gpu = has_gpu and accelerator in ("auto", "gpu", "cuda")
    if not on_gpu and accelerator != "cpu":
        # `auto` without a GPU: one CPU process. Several CPU processes (DDP over gloo) only when asked
        # for explicitly with trainer.accelerator=cpu trainer.devices=N.
        if settings.get("devices", 1) not in (1, "1", "auto") or settings.get("num_nodes", 1) != 1:
            log.info("no GPU: training on one CPU device (trainer.devices/num_nodes ignored; "
                     "set trainer.accelerator=cpu for CPU DDP)")
        settings.update(accelerator="cpu", devices=1, num_nodes=1)
    if settings.get("precision", "auto") in ("auto", None):
        settings["precision"] = "16-mixed" if on_gpu else "32-true"
    settings.setdefault("log_every_n_steps", 1)
    settings.setdefault("enable_model_summary", False)
    # Lightning's tqdm bar would go to the stage log; hackathon.core.progress draws the console bar instead.
    settings["enable_progress_bar"] = False
    return settings


def _next_attempt_version(log_root: Path) -> str:
    n = 1
    while (log_root / f"attempt-{n}").exists():
        n += 1
    return f"attempt-{n}"


def build_trainer(ctx, trainer_cfg, ckpt_dir: Path, monitor: str | None, mode: str = "min",
                  name: str = "fit", callbacks: list | None = None, keep_best: int = 1):
    """A Lightning Trainer that checkpoints every epoch into `ckpt_dir` (atomic, single last.ckpt)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    settings = trainer_settings(trainer_cfg)
    for reserved in ("logger", "callbacks", "plugins", "default_root_dir", "enable_checkpointing"):
        if reserved in settings:
            raise HackathonError(f"trainer.{reserved} is managed by hackathon.core.training and cannot be set in a spec.",
                                 fix=f"Remove trainer.{reserved} from the spec.")
    last_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="last", save_top_k=0, save_last=True,
                              every_n_epochs=1, save_on_train_epoch_end=True, enable_version_counter=False)
    cbs = [last_cb]
    if monitor:  # the best callback goes first: last.ckpt, written after it, holds its updated top-k
        safe = monitor.replace("/", "_")
        cbs.insert(0, ModelCheckpoint(dirpath=ckpt_dir, filename=f"best-epoch{{epoch:03d}}-{safe}{{{monitor}:.4f}}",
                                   monitor=monitor, mode=mode, save_top_k=max(1, keep_best), save_last=False,
                                   auto_insert_metric_name=False, enable_version_counter=False))
    log_root = ctx.logs_dir / name
    logger = CSVLogger(save_dir=str(ctx.logs_dir), name=name, version=_next_attempt_version(log_root))
    cbs.append(lightning_callback(ctx.stage or name))
    trainer = pl.Trainer(default_root_dir=str(ctx.run_dir), logger=logger, callbacks=cbs + list(callbacks or []),
                         plugins=[_atomic_checkpoint_io()], enable_checkpointing=True, **settings)
    return trainer


# ---------------------------------------------------------------- the fit

def fit_resumable(ctx, build_model: Callable[[Any, int], Any], trainer_cfg, batch_size: int,
                  monitor: str | None = None, mode: str = "min", name: str = "fit", key: str | None = None,
                  seed: int | None = 0, min_batch_size: int = 1, callbacks_factory: Callable[[], list] | None = None,
                  keep_best: int = 1) -> FitResult:
    """Fit `build_model(trainer, batch_size)` resumably; see the module docstring.

    `monitor`: logged validation metric for the best checkpoint (e.g. "val_wer"), `mode` min/max.
    `name`: sub-folder of ctx.checkpoints_dir and ctx.logs_dir (several fits per run, e.g. TTS
    fastpitch + hifigan). `key`: identifies the config the checkpoints belong to (default: the run's
    config hash). `callbacks_factory`: extra Lightning callbacks, built fresh for every attempt.
    `keep_best`: how many best-by-monitor checkpoints stay (checkpoint averaging reads them).
    """
    ckpt_dir = ctx.checkpoints_dir / name
    key = key or str(ctx.meta.get("config_hash", ""))
    first_resume = prepare_checkpoint_dir(ctx, ckpt_dir, key)
    attempts: list[dict] = []
    state: dict[str, Any] = {"first": True}

    def train_once(bs: int):
        import lightning.pytorch as pl

        resume = first_resume if state["first"] else find_resume_checkpoint(ckpt_dir)
        state["first"] = False
        if seed is not None:
            pl.seed_everything(seed, workers=True, verbose=False)
        trainer = build_trainer(ctx, trainer_cfg, ckpt_dir, monitor, mode, name,
                                callbacks_factory() if callbacks_factory else None, keep_best=keep_best)
        model = build_model(trainer, bs)
        position = checkpoint_position(resume) if resume else None
        if position:
            log.info("resuming %s from %s (%s epochs done, step %s)", name, resume, position["epochs_done"],
                     position["global_step"])
            state["resumed_from"] = state.get("resumed_from") or position
            ctx.record(resumed_from=position)
        attempts.append({"batch_size": bs, "resumed_from": position, "start": time.strftime("%Y-%m-%dT%H:%M:%S")})
        t0 = time.time()
        trainer.fit(model, ckpt_path=str(resume) if resume else None)
        attempts[-1]["seconds"] = round(time.time() - t0, 2)
        return trainer, model

    t_start = time.time()
    trainer, model = run_with_oom_backoff(ctx, batch_size, train_once, min_batch_size=min_batch_size,
                                          what=f"training ({name})")
    seconds = time.time() - t_start
    digests = _weights_digest_by_rank(model)
    if digests:
        ctx.record(weights_sha256_by_rank=digests, world_size=len(digests))
    _leave_process_group()
    clean_duplicate_last(ckpt_dir)
    best_cb = next((cb for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)), None)
    best = Path(best_cb.best_model_path) if best_cb is not None and best_cb.best_model_path else None
    best_score = float(best_cb.best_model_score) if best_cb is not None and best_cb.best_model_score is not None else None
    top_k = [Path(p) for p in getattr(best_cb, "best_k_models", {}) or {}] if keep_best > 1 else None
    _remove_superseded_best(ckpt_dir, best, top_k)  # keep_best=1: the best alone (a resumed callback's own top-1 may differ)
    last = ckpt_dir / LAST_NAME
    result = FitResult(model=model, trainer=trainer, checkpoint_dir=ckpt_dir,
                       last_checkpoint=last if last.exists() else None, best_checkpoint=best, best_score=best_score,
                       batch_size=attempts[-1]["batch_size"], seconds=seconds,
                       resumed_from=state.get("resumed_from"), attempts=attempts,
                       cut_by_time=stopped_by_time_limit(trainer))
    ctx.record(checkpoint_dir=str(ckpt_dir), best_checkpoint=str(best) if best else None, best_score=best_score,
               fit_attempts=attempts, cut_by_time=result.cut_by_time)
    ctx.write_metrics({f"{ctx.stage or name}_cut_by_time": result.cut_by_time})  # one flag name for every model
    if result.cut_by_time:
        warning = (f"WARNING: {name} training was CUT SHORT by the wall-clock safety trainer.max_time "
                   f"after {trainer.global_step} steps / {trainer.current_epoch} epochs (budget: max_steps "
                   f"{trainer.max_steps}, max_epochs {trainer.max_epochs}); this model is not the reproducible one.")
        log.warning(warning)
        print(warning, file=sys.stderr, flush=True)
    return result


def stopped_by_time_limit(trainer) -> bool:
    """True when Lightning's `max_time` Timer ended the fit before max_steps / max_epochs were reached.

    Budgets are steps/epochs (same command + seed = same model); max_time is only a safety, and a fit it cut
    short must say so (the caller records it in metrics.json).
    """
    from lightning.pytorch.callbacks import Timer

    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is None or remaining > 0:
        return False
    steps_left = trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step < trainer.max_steps
    epochs_left = trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch < trainer.max_epochs
    unbounded = (trainer.max_steps is None or trainer.max_steps < 0) and (trainer.max_epochs is None or trainer.max_epochs < 0)
    return steps_left or epochs_left or unbounded


def _weights_digest_by_rank(model) -> list[str] | None:
    from hackathon.core.elastic import weights_digest_by_rank

    return weights_digest_by_rank(model)


def _leave_process_group() -> None:
    """After a DDP fit the worker processes leave; later stages (evaluate, transcribe) run in rank 0
    alone, and a collective call on the old process group would wait for them forever."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def warmup_then_decay(optimizer, warmup: int, total: int, decay: str = "linear") -> dict:
    """configure_optimizers' answer: the lr rises linearly over `warmup` steps, then decays (linear or cosine) to 0
    at step `total`; stepped every optimizer step."""
    import math

    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if decay == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_best_weights(model, result: FitResult) -> Path | None:
    """Load the best-by-monitor checkpoint's weights into `model` (no-op without one). Returns its path."""
    import torch

    if result.best_checkpoint is None or not result.best_checkpoint.exists():
        return None
    ckpt = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    return result.best_checkpoint
