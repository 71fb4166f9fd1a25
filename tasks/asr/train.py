"""Train stage: fine-tune/train model/init.nemo on data/train, pick the best epoch by validation CER.

The fit itself is hackathon.core.training.fit_resumable: checkpoint every epoch, resume after kill -9,
CUDA OOM back-off, AMP on GPU, trainer.devices/num_nodes passthrough. This file only says how to build
the NeMo model for an attempt (restore, data loaders, optimiser, optional frozen encoder).

Writes model/trained.nemo (best-by-val-CER weights) and records train_seconds in metrics.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from hackathon.core.atomic import atomic_path
from hackathon.core.errors import HackathonError
from tasks.asr.model import INIT_MODEL, dataset_config, read_vocabulary_report, restore_model
from tasks.asr.prepare import manifest_path

TRAINED_MODEL = "model/trained.nemo"
# NeMo's CTC model logs validation error as `val_wer`; with use_cer it is the character error rate.
MONITOR = "val_wer"


def freeze_encoder_keep_batchnorm(model) -> None:
    """Freeze the encoder but keep batch-norm (and squeeze-excite) trainable, as NeMo's tutorial does:
    the new data's statistics differ, and adapting them is cheap and helps."""
    import torch

    model.encoder.freeze()
    for module in model.encoder.modules():
        if isinstance(module, torch.nn.BatchNorm1d) or "SqueezeExcite" in type(module).__name__:
            module.train()
            for p in module.parameters():
                p.requires_grad_(True)


def nemo_optim_config(cfg):
    """NeMo's optim config: the spec's `optim` section with the learning rate from `trainer.lr`."""
    from omegaconf import OmegaConf

    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    return OmegaConf.create({"name": optim.pop("name"), "lr": cfg.trainer.lr, **optim})


def make_model_builder(ctx):
    """build_model(trainer, batch_size) for fit_resumable: everything read from the run dir."""
    from omegaconf import open_dict

    cfg = ctx.cfg
    labels = read_vocabulary_report(ctx.run_dir)["vocabulary"]
    init_path = ctx.run_dir / INIT_MODEL
    if not init_path.exists():
        raise HackathonError(f"{init_path} is missing.", fix="Re-run from the model stage: --from model")

    def build_model(trainer, batch_size: int):
        model = restore_model(init_path, trainer=trainer)
        model.set_trainer(trainer)
        model.setup_training_data(dataset_config(cfg, manifest_path(ctx.run_dir, "train"), labels, batch_size,
                                                 shuffle=True, training=True))
        model.setup_validation_data(dataset_config(cfg, manifest_path(ctx.run_dir, "val"), labels,
                                                   int(cfg.evaluate.batch_size), shuffle=False, training=False))
        if cfg.model.freeze_encoder:
            freeze_encoder_keep_batchnorm(model)
        # Lightning's configure_optimizers builds the optimizer from cfg.optim + trainer.lr, after the freeze,
        # so frozen weights are not in it and the scheduler sees this attempt's steps per epoch.
        with open_dict(model.cfg):
            model.cfg.optim = nemo_optim_config(cfg)
        return model

    return build_model


def save_trained(model, path: Path) -> None:
    with atomic_path(path, suffix=".nemo") as tmp:
        model.save_to(str(tmp))


def train_stage(ctx) -> None:
    from hackathon.core.training import fit_resumable, load_best_weights

    cfg = ctx.cfg
    t0 = time.time()
    result = fit_resumable(ctx, make_model_builder(ctx), cfg.trainer, batch_size=int(cfg.trainer.batch_size),
                           monitor=MONITOR, mode="min", name="fit", seed=int(cfg.seed),
                           keep_best=max(1, int(cfg.export.get("average_best_k", 0) or 0)))
    best = load_best_weights(result.model, result)
    if not result.trainer.is_global_zero:  # DDP worker: rank 0 writes the model and the records
        return
    save_trained(result.model, ctx.path(TRAINED_MODEL))
    # Wall time of this start of the stage (after a kill -9 + resume: the resumed part only; meta.json
    # has the resumed_from position).
    seconds = round(time.time() - t0, 2)
    ctx.record(best_checkpoint=str(best) if best else None, best_val_cer=result.best_score,
               epochs=result.trainer.current_epoch)
    ctx.write_metrics({"train_seconds": seconds, "best_val_cer": result.best_score,
                       "epochs": result.trainer.current_epoch})
