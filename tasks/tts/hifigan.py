"""hifigan: HiFiGAN fine-tuned on FastPitch's teacher-forced mels, from `hifigan.init` (a pretrained vocoder:
a .nemo / .ckpt or an NGC name, same mels as our FastPitch: checked before any work) or from scratch (then
pre-trained on the recordings first).

Resumable fits (hackathon/core/training.py): checkpoints/hifigan_pretrain/ (scratch only) and
checkpoints/hifigan_finetune/; the fine-tune starts from the init or the pre-trained weights.
Output: models/hifigan.nemo. Skipped when
hifigan.enabled is false (the CPU demo: its ~70 M-parameter discriminators cost ~7 s per step here).
"""

from __future__ import annotations

from pathlib import Path


NEMO_NAME = "hifigan.nemo"


def hifigan_config(ctx, phase: str, steps: int):
    from tasks.tts.model_config import load_model_config

    section = ctx.cfg.hifigan
    if phase == "pretrain":
        train, val, precomputed = ctx.path("sup_data", "train.json"), ctx.path("sup_data", "val.json"), False
    else:
        train, val, precomputed = ctx.path("mels", "train.json"), ctx.path("mels", "val.json"), True
    filled = {
        "train_dataset": str(train),
        "validation_datasets": str(val),
        "load_precomputed_mel": precomputed,
        "sample_rate": int(ctx.cfg.data.sample_rate),
        "model.max_steps": int(steps),
        "model.train_ds.dataloader_params.batch_size": int(section.trainer.batch_size),
        "model.validation_ds.dataloader_params.batch_size": int(section.trainer.batch_size),
        "model.train_ds.dataloader_params.num_workers": int(section.num_workers),
        "model.validation_ds.dataloader_params.num_workers": int(section.num_workers),
    }
    cfg = load_model_config(section, filled)
    _check_matches_fastpitch(ctx, cfg)
    if int(section.num_workers) == 0:
        cfg.model.train_ds.dataloader_params.pin_memory = False
        cfg.model.validation_ds.dataloader_params.pin_memory = False
    return cfg


def _check_matches_fastpitch(ctx, cfg) -> None:
    """A vocoder trained on other mels than the trained FastPitch makes would only produce noise: refuse early."""
    from omegaconf import OmegaConf

    from tasks.tts.model_config import check_vocoder_mels, mel_settings

    fastpitch = OmegaConf.load(ctx.path("models", "fastpitch_config.yaml"))
    check_vocoder_mels(mel_settings(fastpitch), cfg, f"HiFiGAN config {ctx.cfg.hifigan.model_config}",
                       "the trained FastPitch (models/fastpitch_config.yaml)")


def _trainer_cfg(ctx, steps: int) -> dict:
    """hifigan.trainer for one phase: its steps as max_steps (the phases' step keys are ours, not Lightning's)."""
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(ctx.cfg.hifigan.trainer, resolve=True)
    settings.pop("pretrain_steps"), settings.pop("finetune_steps")
    settings.update(max_steps=int(steps), max_epochs=-1)
    return settings


def build_hifigan(model_cfg, trainer, batch_size: int, init_from: Path | None = None, init: dict | None = None):
    import torch
    from nemo.collections.tts.models import HifiGanModel
    from omegaconf import open_dict

    from hackathon.core.init_weights import load_matching

    with open_dict(model_cfg):
        model_cfg.model.train_ds.dataloader_params.batch_size = batch_size
    model = HifiGanModel(cfg=model_cfg.model, trainer=trainer)
    if init_from is not None:
        state = torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"]
        model.load_state_dict(state)
    if init is not None:
        init["loaded"], init["new"] = load_matching(model, init["state"])
    return model


def hifigan_stage(ctx) -> None:
    from nemo.collections.tts.models import HifiGanModel

    from hackathon.core.atomic import atomic_path
    from hackathon.core.init_weights import record, record_init
    from hackathon.core.nemo_models import init_nemo_file, load_init_model
    from hackathon.core.training import fit_resumable

    section = ctx.cfg.hifigan
    if not section.enabled:
        ctx.record(skipped="hifigan.enabled is false: synthesis uses Griffin-Lim")
        return
    steps, bs, seed = section.trainer, int(section.trainer.batch_size), int(ctx.cfg.seed)
    fine_cfg = hifigan_config(ctx, "finetune", int(steps.finetune_steps))
    init_path = init_nemo_file(HifiGanModel, section.init, "HiFiGAN", "hifigan.init")
    init, pre = None, None
    if init_path is not None:  # a pretrained vocoder needs no pre-training on the recordings
        init = {"state": load_init_model(HifiGanModel, init_path).state_dict()}
    else:
        pre_cfg = hifigan_config(ctx, "pretrain", int(steps.pretrain_steps))
        pre = fit_resumable(ctx, lambda trainer, b: build_hifigan(pre_cfg, trainer, b),
                            _trainer_cfg(ctx, steps.pretrain_steps), batch_size=bs, name="hifigan_pretrain", seed=seed)
    fine = fit_resumable(ctx, lambda trainer, b: build_hifigan(fine_cfg, trainer, b, pre and pre.last_checkpoint, init),
                         _trainer_cfg(ctx, steps.finetune_steps), batch_size=bs, name="hifigan_finetune", seed=seed)
    if not fine.trainer.is_global_zero:  # DDP / torchrun worker: rank 0 writes the model and the records
        return
    with atomic_path(ctx.path("models", NEMO_NAME), suffix=".nemo") as tmp:
        fine.model.save_to(str(tmp))
    done = init or {"loaded": 0, "new": []}
    record_init(ctx, "hifigan", record(section.init, init_path, done["loaded"], done["new"]))
    pre_steps, pre_seconds = (int(steps.pretrain_steps), pre.seconds) if pre else (0, 0.0)
    n_gen = sum(p.numel() for p in fine.model.generator.parameters())
    n_all = sum(p.numel() for p in fine.model.parameters())
    ctx.record(generator_parameters=n_gen, parameters=n_all, pretrain_seconds=round(pre_seconds, 1),
               finetune_seconds=round(fine.seconds, 1),
               seconds_per_step=round((pre_seconds + fine.seconds) / max(1, pre_steps + int(steps.finetune_steps)), 2))


def load_hifigan(run_dir: str | Path):
    from nemo.collections.tts.models import HifiGanModel

    from hackathon.core.nemo_models import restore_nemo

    return restore_nemo(HifiGanModel, Path(run_dir) / "models" / NEMO_NAME,
                        "{path} not found: this run trained no HiFiGAN.",
                        "Use vocoder=griffin_lim, or run with hifigan.enabled=true.").eval()
