"""Train stage (whisper_lora): LoRA adapters (peft) on Whisper, best adapter by validation CER.

A plain torch loop, not HF's Seq2SeqTrainer: with a frozen encoder the batches are cached encoder
states (model/encoder/), which the Trainer's collator/generate path does not take, and validation CER
needs our greedy decoder anyway; the loop is short and its checkpoints follow hackathon/core/training.py's
conventions (one folder, atomic writes, config key, stale folders moved aside), so kill -9 + the same
command resumes exactly.

- Base: fp32 on CPU; on CUDA the base is int8 (bitsandbytes, `prepare_model_for_kbit_training`) when
  `lora.int8_base` allows, with fp16/bf16 autocast (`trainer.precision`).
- Checkpoints in checkpoints/whisper/: `last.ckpt` after every epoch (adapter weights, optimizer,
  scheduler, epoch, step, history) plus `epoch-NNN.ckpt` for the best `trainer.keep_best` epochs by
  validation CER (the export stage's checkpoint averaging reads them).
- CUDA OOM: hackathon.core.oom halves the batch and resumes from last.ckpt.
Writes model/adapter/ (peft save_pretrained of the best epoch) and best_val_cer/train_seconds metrics.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np

from hackathon.core.atomic import atomic_dir, atomic_path, atomic_write_json
from hackathon.core.errors import HackathonError

ADAPTER_DIR = "model/adapter"
CKPT_NAME = "whisper"
IGNORE = -100


# ---------------------------------------------------------------- model

def lora_config(lora_cfg):
    from omegaconf import OmegaConf
    from peft import LoraConfig

    targets = OmegaConf.to_container(lora_cfg.target_modules) if OmegaConf.is_config(lora_cfg.target_modules) \
        else list(lora_cfg.target_modules)
    return LoraConfig(r=int(lora_cfg.r), lora_alpha=int(lora_cfg.alpha), target_modules=targets,
                      lora_dropout=float(lora_cfg.dropout), bias=str(lora_cfg.bias))


def build_lora_model(cfg, model_dir: Path, cuda: bool, int8: bool):
    """Base (fp32 CPU / fp16 or int8 GPU) + fresh LoRA adapters; only adapter weights train."""
    import torch
    from peft import get_peft_model

    from tasks.asr.whisper_lora.model import load_whisper

    torch.manual_seed(int(cfg.seed))
    base = load_whisper(model_dir, cuda=cuda, int8=int8)
    if int8:  # imported only here: bitsandbytes prints CPU-kernel notes on import
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    elif cuda:
        base = base.float()  # fp32 master weights; autocast runs the matmuls in half precision
    model = get_peft_model(base, lora_config(cfg.lora))
    if bool(cfg.whisper.freeze_encoder):
        for name, p in model.named_parameters():
            if ".encoder." in name:
                p.requires_grad_(False)
    return model


def adapter_state(model) -> dict:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model, state: dict) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state)


# ---------------------------------------------------------------- data

def targets(tokens, texts: list[str], prompt: list[int], max_tokens: int, log=None) -> list[tuple[list[int], list[int]]]:
    """(decoder_input_ids, labels) per text: input = prompt + text, labels = text + <|endoftext|>, the
    prompt positions ignored (the language/task tokens are given, not learned)."""
    out = []
    for text in texts:
        ids = tokens.encode(text)
        if len(ids) > max_tokens:
            if log:
                log.warning("transcript %r is %d tokens: cut to whisper.max_target_tokens=%d", text, len(ids), max_tokens)
            ids = ids[:max_tokens]
        inp = prompt + ids
        labels = [IGNORE] * (len(prompt) - 1) + ids + [tokens.eot]
        out.append((inp, labels))
    return out


def collate(pairs, pad_id: int):
    import torch

    n = max(len(i) for i, _ in pairs)
    inp = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    lab = torch.full((len(pairs), n), IGNORE, dtype=torch.long)
    for r, (i, l) in enumerate(pairs):
        inp[r, :len(i)] = torch.tensor(i)
        lab[r, :len(l)] = torch.tensor(l)
    return inp, lab


class SplitData:
    """Training inputs of one split: cached encoder states (frozen encoder) or log-mel features."""

    def __init__(self, ctx, split: str, tokens):
        from data_tools.manifest import read_manifest
        from tasks.asr.prepare import manifest_path
        from tasks.asr.whisper_lora.decode import load_clip, log_mel
        from tasks.asr.whisper_lora.model import base_dir, load_states

        cfg = ctx.cfg
        self.entries = read_manifest(manifest_path(ctx.run_dir, split))
        self.frozen = bool(cfg.whisper.freeze_encoder)
        self.inputs = load_states(ctx.run_dir, split, self.entries, base_dir(ctx.run_dir)) if self.frozen \
            else log_mel([load_clip(e.audio_filepath) for e in self.entries])
        prompt = tokens.prompt(str(cfg.whisper.language), str(cfg.whisper.task))
        self.pairs = targets(tokens, [e.text for e in self.entries], prompt, int(cfg.whisper.max_target_tokens), ctx.log)

    def __len__(self) -> int:
        return len(self.entries)


# ---------------------------------------------------------------- checkpoints

def epoch_checkpoints(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("epoch-*.ckpt"))


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def keep_best_epochs(ckpt_dir: Path, history: list[dict], keep: int) -> None:
    """Delete epoch checkpoints outside the best `keep` by validation CER (ties: the earlier epoch)."""
    ranked = sorted((h for h in history if h.get("val_cer") is not None), key=lambda h: (h["val_cer"], h["epoch"]))
    wanted = {f"epoch-{h['epoch']:03d}.ckpt" for h in ranked[:max(keep, 1)]}
    for p in epoch_checkpoints(ckpt_dir):
        if p.name not in wanted:
            p.unlink(missing_ok=True)


def best_epochs(ckpt_dir: Path, k: int) -> list[tuple[Path, dict]]:
    """The best k kept epoch checkpoints by validation CER: [(path, {epoch, val_cer})]."""
    import torch

    rows = []
    for p in epoch_checkpoints(ckpt_dir):
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        rows.append((p, {"epoch": ckpt["epoch"], "val_cer": ckpt["val_cer"], "adapter": ckpt["adapter"]}))
    rows.sort(key=lambda r: (r[1]["val_cer"], r[1]["epoch"]))
    return rows[:k]


# ---------------------------------------------------------------- the loop

def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def precision_settings(trainer_cfg, cuda: bool):
    """(autocast dtype or None, use GradScaler)."""
    import torch

    precision = str(trainer_cfg.get("precision", "auto")).lower()
    if not cuda or precision in ("32", "32-true", "fp32"):
        return None, False
    if precision in ("bf16", "bf16-mixed") or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def validation_cer(ctx, model, tokens, batch_size: int) -> float:
    from tasks.asr.evaluate import aggregate, score_predictions
    from tasks.asr.prepare import read_summary
    from tasks.asr.whisper_lora.model import transcribe_split

    rows = score_predictions(transcribe_split(ctx, model, tokens, "val", batch_size), read_summary(ctx.run_dir)["language"])
    return float(aggregate(rows)["cer"])


def train_stage(ctx) -> None:
    import torch

    from hackathon.core.oom import run_with_oom_backoff
    from hackathon.core.training import checkpoint_position, find_resume_checkpoint, prepare_checkpoint_dir, LAST_NAME
    from hackathon.core.fingerprint import obj_fingerprint
    from hackathon.core.config import cfg_slice
    from tasks.asr.whisper_lora.decode import load_tokens
    from tasks.asr.whisper_lora.model import base_dir, int8_wanted, use_cuda

    cfg = ctx.cfg
    t_start = time.time()
    model_dir = base_dir(ctx.run_dir)
    tokens = load_tokens(model_dir)
    cuda = use_cuda(cfg.trainer)
    int8 = int8_wanted(cfg.lora, cuda)
    device = torch.device("cuda" if cuda else "cpu")
    train, val = SplitData(ctx, "train", tokens), SplitData(ctx, "val", tokens)
    if not len(train):
        raise HackathonError("The train split is empty.", fix="Add training clips (see the prepare stage's summary).")
    ckpt_dir = ctx.checkpoints_dir / CKPT_NAME
    key = obj_fingerprint(cfg_slice(cfg, ("seed", "whisper", "lora", "optim", "trainer", "data")))
    first_resume = prepare_checkpoint_dir(ctx, ckpt_dir, key)
    max_epochs = int(cfg.trainer.max_epochs)
    autocast_dtype, use_scaler = precision_settings(cfg.trainer, cuda)
    log_file = ctx.logs_dir / CKPT_NAME / "metrics.csv"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    state = {"first": True}
    ctx.record(device=str(device), int8_base=int8, autocast=str(autocast_dtype) if autocast_dtype else None,
               trainable_parameters=None)

    def train_once(batch_size: int):
        resume = first_resume if state["first"] else find_resume_checkpoint(ckpt_dir)
        state["first"] = False
        model = build_lora_model(cfg, model_dir, cuda, int8)
        params = [p for p in model.parameters() if p.requires_grad]
        ctx.record(trainable_parameters=int(sum(p.numel() for p in params)))
        steps_per_epoch = math.ceil(len(train) / batch_size)
        total = steps_per_epoch * max_epochs
        warmup = int(cfg.optim.warmup_steps)
        opt = torch.optim.AdamW(params, lr=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total))
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        history: list[dict] = []
        epoch0, step = 0, 0
        if resume is not None:
            ckpt = torch.load(resume, map_location="cpu", weights_only=False)
            load_adapter_state(model, ckpt["adapter"])
            if ckpt.get("batch_size") == batch_size:  # after an OOM back-off the schedule restarts its counts
                opt.load_state_dict(ckpt["optimizer"])
                sched.load_state_dict(ckpt["scheduler"])
            epoch0, step, history = ckpt["epoch"], ckpt["global_step"], list(ckpt["history"])
            position = checkpoint_position(resume)
            ctx.record(resumed_from={**position, "epochs_done": epoch0})
            ctx.log.info("resuming LoRA training from %s (%d epochs done, step %d)", resume, epoch0, step)
            print(f"  resuming from {resume.name}: {epoch0} epochs done", flush=True)
        for epoch in range(epoch0, max_epochs):
            model.train()
            order = np.random.default_rng(int(cfg.seed) + epoch).permutation(len(train))
            t_epoch, losses = time.time(), []
            for b in range(steps_per_epoch):
                idx = order[b * batch_size:(b + 1) * batch_size]
                inp, lab = collate([train.pairs[i] for i in idx], tokens.eot)
                x = torch.from_numpy(train.inputs[idx]).to(device)
                inp, lab = inp.to(device), lab.to(device)
                amp = torch.autocast(device_type="cuda", dtype=autocast_dtype) if autocast_dtype is not None \
                    else contextlib.nullcontext()
                with amp:
                    if train.frozen:
                        out = model(encoder_outputs=(x,), decoder_input_ids=inp)
                    else:
                        out = model(input_features=x, decoder_input_ids=inp)
                    loss = torch.nn.functional.cross_entropy(out.logits.float().transpose(1, 2), lab, ignore_index=IGNORE)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(params, float(cfg.trainer.gradient_clip_val))
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                step += 1
                losses.append(float(loss.detach()))
                if step % int(cfg.trainer.log_every_n_steps) == 0:
                    with open(log_file, "a", encoding="utf-8") as fh:
                        fh.write(f"{step},{epoch},{losses[-1]:.5f},{sched.get_last_lr()[0]:.6g}\n")
            val_cer = validation_cer(ctx, model, tokens, int(cfg.evaluate.batch_size))
            history.append({"epoch": epoch + 1, "val_cer": val_cer, "train_loss": float(np.mean(losses)),
                            "seconds": round(time.time() - t_epoch, 2), "batch_size": batch_size})
            ckpt = {"adapter": adapter_state(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "epoch": epoch + 1, "global_step": step, "val_cer": val_cer, "history": history,
                    "batch_size": batch_size, "key": key}
            save_checkpoint(ckpt_dir / f"epoch-{epoch + 1:03d}.ckpt", ckpt)
            save_checkpoint(ckpt_dir / LAST_NAME, ckpt)
            keep_best_epochs(ckpt_dir, history, int(cfg.trainer.keep_best))
            msg = (f"epoch {epoch + 1}/{max_epochs}: train loss {history[-1]['train_loss']:.4f}, "
                   f"val CER {val_cer:.4f} ({history[-1]['seconds']:.0f} s)")
            ctx.log.info(msg)
            print("  " + msg, flush=True)
        return model, history

    model, history = run_with_oom_backoff(ctx, int(cfg.trainer.batch_size), train_once, what="Whisper LoRA training")
    best = min(history, key=lambda h: (h["val_cer"], h["epoch"]))
    best_ckpt = torch.load(ckpt_dir / f"epoch-{best['epoch']:03d}.ckpt", map_location="cpu", weights_only=False)
    load_adapter_state(model, best_ckpt["adapter"])
    with atomic_dir(ctx.path(ADAPTER_DIR)) as tmp:
        model.save_pretrained(str(tmp))
        atomic_write_json(tmp / "hackathon_adapter.json", {"base": str(model_dir), "epoch": best["epoch"],
                                                           "val_cer": best["val_cer"], "language": str(cfg.whisper.language),
                                                           "task": str(cfg.whisper.task)})
    seconds = round(time.time() - t_start, 2)
    ctx.record(best_epoch=best["epoch"], best_val_cer=best["val_cer"], history=history)
    ctx.write_metrics({"train_seconds": seconds, "best_val_cer": best["val_cer"], "epochs": len(history),
                       "best_epoch": best["epoch"]})


def load_trained(ctx_or_run_dir, cuda: bool = False):
    """Base (fp32/fp16, never int8: inference and merging want real weights) + the best adapter."""
    from peft import PeftModel

    from tasks.asr.whisper_lora.model import base_dir, load_whisper

    run_dir = Path(getattr(ctx_or_run_dir, "run_dir", ctx_or_run_dir))
    adapter = run_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise HackathonError(f"{adapter} is missing.", fix="Re-run from the train stage: --from train")
    return PeftModel.from_pretrained(load_whisper(base_dir(run_dir), cuda=cuda), str(adapter)).eval()

