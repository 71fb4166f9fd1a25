"""FastPitch (learned alignment) from scratch or from `fastpitch.init`, resumable through hackathon/core/training.py.

An init (a .nemo / .ckpt, or an NGC name such as tts_zh_fastpitch_sfspeech) is compared with our tokenizer
before training: tensors of the same name and shape are copied, the token embedding row by token; tokens the
init lacks start random and are named in models/fastpitch_init.json and the log.
Output: checkpoints/fastpitch/last.ckpt (resume point) and models/fastpitch.nemo (what synthesis loads).
"""

from __future__ import annotations

import json
import math
from pathlib import Path


NEMO_NAME = "fastpitch.nemo"


def fastpitch_config(ctx):
    """The resolved NeMo FastPitch config for this run: spec + model yaml + run files."""
    from tasks.tts.g2p import g2p_config
    from tasks.tts.model_config import check_sample_rates, load_model_config

    check_sample_rates(ctx.cfg)
    section = ctx.cfg.fastpitch
    stats = json.loads(ctx.path("sup_data", "pitch_stats.json").read_text())
    dict_path = ctx.path("g2p", "pinyin_dict.txt")
    peak_lr, warmup = float(section.trainer.lr), int(section.warmup_steps)
    filled = {
        "train_dataset": str(ctx.path("sup_data", "train.json")),
        "validation_datasets": str(ctx.path("sup_data", "val.json")),
        "sup_data_path": str(ctx.path("sup_data", "train")),
        "model.validation_ds.dataset.sup_data_path": str(ctx.path("sup_data", "val")),
        "phoneme_dict_path": str(dict_path),
        "pitch_mean": stats["pitch_mean"],
        "pitch_std": stats["pitch_std"],
        "pitch_fmin": stats["pitch_fmin"],
        "pitch_fmax": stats["pitch_fmax"],
        "sample_rate": int(ctx.cfg.data.sample_rate),
        "model.text_tokenizer": g2p_config(dict_path, ctx.cfg.g2p),
        "model.train_ds.dataloader_params.batch_size": int(section.trainer.batch_size),
        "model.validation_ds.dataloader_params.batch_size": int(section.trainer.batch_size),
        "model.train_ds.dataloader_params.num_workers": int(section.num_workers),
        "model.validation_ds.dataloader_params.num_workers": int(section.num_workers),
        # NoamAnnealing with d_model=1 peaks at lr / sqrt(warmup): choose lr so the peak is `trainer.lr`.
        "model.optim.lr": peak_lr * math.sqrt(warmup),
        "model.optim.sched.warmup_steps": warmup,
    }
    cfg = load_model_config(section, filled)
    if int(section.num_workers) == 0:
        cfg.model.train_ds.dataloader_params.pin_memory = False
        cfg.model.validation_ds.dataloader_params.pin_memory = False
    return cfg


EMBEDDING = "fastpitch.encoder.word_emb.weight"


def build_fastpitch(model_cfg, trainer, batch_size: int, init: dict | None = None):
    from nemo.collections.tts.models import FastPitchModel
    from omegaconf import open_dict

    from hackathon.core.init_weights import load_matching

    with open_dict(model_cfg):
        model_cfg.model.train_ds.dataloader_params.batch_size = batch_size
        model_cfg.model.validation_ds.dataloader_params.batch_size = batch_size
    model = FastPitchModel(cfg=model_cfg.model, trainer=trainer)
    if init is not None:
        init["loaded"], init["new"] = load_matching(model, remap_embedding(model, init["state"], init["tokens"]))
    return model


def remap_embedding(model, state: dict, init_tokens: list[str]) -> dict:
    """`state` with the token embedding re-ordered to our tokens (rows of tokens the init lacks stay ours)."""
    emb, theirs = model.state_dict()[EMBEDDING].clone(), state.get(EMBEDDING)
    if theirs is None or theirs.shape[1] != emb.shape[1]:
        return state  # another width: load_matching leaves the whole embedding random (listed as new)
    row = {t: i for i, t in enumerate(init_tokens)}
    for i, token in enumerate(model.vocab.tokens):
        if token in row:
            emb[i] = theirs[row[token]]
    return {**state, EMBEDDING: emb}


def load_init(ctx):
    """Before training: the init's weights and tokens, and the token comparison (logged, written, recorded)."""
    from nemo.collections.tts.models import FastPitchModel

    from hackathon.core.atomic import atomic_write_json
    from hackathon.core.nemo_models import init_nemo_file, load_init_model
    from tasks.tts.g2p import make_tokenizer

    path = init_nemo_file(FastPitchModel, ctx.cfg.fastpitch.init, "FastPitch", "fastpitch.init")
    if path is None:
        return None, None
    model = load_init_model(FastPitchModel, path)
    theirs = list(model.vocab.tokens)
    ours = list(make_tokenizer(ctx.path("g2p", "pinyin_dict.txt"), ctx.cfg.g2p).tokens)
    missing = [t for t in ours if t not in set(theirs)]
    report = {"init": str(ctx.cfg.fastpitch.init), "tokenizer": "remapped" if missing or ours != theirs else "same",
              "our_tokens": len(ours), "init_tokens": len(theirs), "new_tokens": missing}
    atomic_write_json(ctx.path("models", "fastpitch_init.json"), report)
    if missing:
        ctx.log.warning("fastpitch.init %s lacks %d of our %d tokens; their embedding rows start random: %s",
                        report["init"], len(missing), len(ours), " ".join(missing))
    if int(model.cfg.get("sample_rate", 0)) != int(ctx.cfg.data.sample_rate):
        ctx.log.warning("fastpitch.init %s was trained on %s Hz mels, this run's are %d Hz: it relearns them",
                        report["init"], model.cfg.get("sample_rate"), int(ctx.cfg.data.sample_rate))
    ctx.record(init_tokenizer=report["tokenizer"], new_tokens=missing)
    return {"state": model.state_dict(), "tokens": theirs}, path


def fastpitch_stage(ctx) -> None:
    """Train, then save models/fastpitch.nemo (last weights: the aligner improves to the very end)."""
    from omegaconf import OmegaConf

    from hackathon.core.atomic import atomic_path, atomic_write_text
    from hackathon.core.init_weights import record, record_init
    from hackathon.core.training import fit_resumable

    model_cfg = fastpitch_config(ctx)
    atomic_write_text(ctx.path("models", "fastpitch_config.yaml"), OmegaConf.to_yaml(model_cfg))
    init, init_path = load_init(ctx)
    result = fit_resumable(ctx, lambda trainer, bs: build_fastpitch(model_cfg, trainer, bs, init),
                           ctx.cfg.fastpitch.trainer, batch_size=int(ctx.cfg.fastpitch.trainer.batch_size),
                           monitor="val_loss", mode="min", name="fastpitch", seed=int(ctx.cfg.seed))
    if not result.trainer.is_global_zero:  # DDP / torchrun worker: rank 0 writes the model and the records
        return
    model = result.model
    n_params = sum(p.numel() for p in model.parameters())
    with atomic_path(ctx.path("models", NEMO_NAME), suffix=".nemo") as tmp:
        model.save_to(str(tmp))
    done = init or {"loaded": 0, "new": []}
    record_init(ctx, "fastpitch", record(ctx.cfg.fastpitch.init, init_path, done["loaded"], done["new"]))
    ctx.record(parameters=n_params, global_step=int(result.trainer.global_step),
               epochs=int(result.trainer.current_epoch), train_seconds=round(result.seconds, 1),
               batch_size=result.batch_size)
    ctx.write_metrics({"fastpitch_params": n_params, "fastpitch_steps": int(result.trainer.global_step),
                       "fastpitch_epochs": int(result.trainer.current_epoch),
                       "fastpitch_max_steps": int(result.trainer.max_steps),
                       "fastpitch_train_seconds": round(result.seconds, 1)})


def load_fastpitch(run_dir: str | Path):
    """The trained FastPitch of a run directory, in eval mode on CPU (or GPU when present)."""
    from nemo.collections.tts.models import FastPitchModel

    from hackathon.core.nemo_models import restore_nemo

    return restore_nemo(FastPitchModel, Path(run_dir) / "models" / NEMO_NAME,
                        "{path} not found: this run has no trained FastPitch.",
                        "Run `hackathon run tts` to completion, or pass --model with a finished run dir.").eval()
