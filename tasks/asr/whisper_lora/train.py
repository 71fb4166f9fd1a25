"""Train stage (whisper_lora): LoRA adapters (peft) on Whisper, trained on the one engine
(hackathon.core.training.fit_resumable: Lightning, last.ckpt + best-*.ckpt by validation CER, resume
after kill -9, CUDA OOM back-off, `train_cut_by_time`).

- WhisperLoRA (a LightningModule) holds the peft model. With `model.freeze_encoder` a training batch
  is the cached encoder states (model/encoder/) and the seq2seq loss runs through the decoder only;
  otherwise the whole model runs on log-mel features. Validation decodes the val split with the
  backend's one greedy decoder (decode.py) and logs `val_cer` (best checkpoint: mode min).
- Base: fp32 on CPU; on CUDA the base is int8 (bitsandbytes, `prepare_model_for_kbit_training`) when
  `lora.int8_base` allows, with the AMP of `trainer.precision` (auto = 16-mixed on GPU).
- Optimiser: AdamW (`trainer.lr`, `trainer.weight_decay`), linear warm-up over `trainer.warmup_steps`
  then linear decay to 0; gradient clipping and the rest are Lightning's `trainer:` keys.
- Checkpoints hold the adapter weights only (state_dict/load_state_dict below): a few MB each.
  checkpoints/whisper/: last.ckpt + the best max(1, export.average_best_k) by val CER (averaging reads them).
Writes model/adapter/ (peft save_pretrained of the best checkpoint) and best_val_cer/train_seconds metrics.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np

from hackathon.core.atomic import atomic_dir, atomic_write_json
from hackathon.core.errors import HackathonError
from hackathon.core.training import fit_resumable, load_best_weights, warmup_then_decay

ADAPTER_DIR = "model/adapter"
CKPT_NAME = "whisper"
MONITOR = "val_cer"
IGNORE = -100


# ---------------------------------------------------------------- model

def lora_config(lora_cfg):
    from omegaconf import OmegaConf
    from peft import LoraConfig

    targets = OmegaConf.to_container(lora_cfg.target_modules) if OmegaConf.is_config(lora_cfg.target_modules) \
        else list(lora_cfg.target_modules)
    return LoraConfig(r=int(lora_cfg.r), lora_alpha=int(lora_cfg.alpha), target_modules=targets,
                      lora_dropout=float(lora_cfg.dropout), bias=str(lora_cfg.bias))


def build_lora_model(cfg, model_dir: Path, int8: bool):
    """Base (fp32, or int8 on GPU) + fresh LoRA adapters; only adapter weights train (AMP: the engine)."""
    from peft import get_peft_model

    from tasks.asr.whisper_lora.model import load_whisper

    # the engine seeded torch (LoRA init); a fp32 base on CPU, moved to the device by Lightning
    base = load_whisper(model_dir, cuda=int8, int8=int8)
    if int8:  # imported only here: bitsandbytes prints CPU-kernel notes on import
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    model = get_peft_model(base, lora_config(cfg.lora))
    if bool(cfg.model.freeze_encoder):
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
                log.warning("transcript %r is %d tokens: cut to model.max_target_tokens=%d", text, len(ids), max_tokens)
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
        self.frozen = bool(cfg.model.freeze_encoder)
        self.inputs = load_states(ctx.run_dir, split, self.entries, base_dir(ctx.run_dir)) if self.frozen \
            else log_mel([load_clip(e.audio_filepath) for e in self.entries])
        prompt = tokens.prompt(str(cfg.model.language), str(cfg.model.task))
        self.pairs = targets(tokens, [e.text for e in self.entries], prompt, int(cfg.model.max_target_tokens), ctx.log)

    def __len__(self) -> int:
        return len(self.entries)


# ---------------------------------------------------------------- data order and schedule

class EpochOrder:
    """The training order of epoch e: a permutation drawn from seed + e. Lightning calls set_epoch, so
    a fit resumed at epoch e sees the same batches as one that never stopped."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng(self.seed + self.epoch).permutation(self.n).tolist())


# ---------------------------------------------------------------- the LightningModule

@functools.lru_cache(maxsize=None)
def module_class():
    """WhisperLoRA, built on first use (Lightning is imported only when training)."""
    import lightning.pytorch as pl
    import torch

    class WhisperLoRA(pl.LightningModule):
        def __init__(self, ctx, model, tokens, train: SplitData, val: SplitData, batch_size: int):
            from tasks.asr.prepare import read_summary

            super().__init__()
            self.model, self.tokens, self.train_data, self.val_data = model, tokens, train, val
            self.cfg, self.run_log = ctx.cfg, ctx.log
            self.batch_size = batch_size
            self.score_language = read_summary(ctx.run_dir)["language"]
            self.history: list[dict] = []  # per epoch; kept in the checkpoint, so a resumed fit continues it
            self._texts: dict[int, str] = {}  # val clip index -> transcript (a DDP rank sees its share)
            self._losses: list[float] = []
            self._t_epoch = time.time()

        # the checkpoint holds the adapter weights only (the base comes from model/ on every start)
        def state_dict(self, *args, **kwargs):
            return adapter_state(self.model)

        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            load_adapter_state(self.model, state_dict)

        def on_save_checkpoint(self, checkpoint) -> None:
            checkpoint["history"] = self.history

        def on_load_checkpoint(self, checkpoint) -> None:
            self.history = list(checkpoint.get("history", []))

        def _batch(self, data: SplitData, idx: list[int]):
            inp, lab = collate([data.pairs[i] for i in idx], self.tokens.eot)
            return torch.from_numpy(data.inputs[idx]), inp, lab

        def train_dataloader(self):
            return torch.utils.data.DataLoader(range(len(self.train_data)), batch_size=self.batch_size,
                                               sampler=EpochOrder(len(self.train_data), int(self.cfg.seed)),
                                               collate_fn=lambda idx: self._batch(self.train_data, idx))

        def val_dataloader(self):
            return torch.utils.data.DataLoader(range(len(self.val_data)), batch_size=int(self.cfg.evaluate.batch_size),
                                               collate_fn=list)

        def configure_optimizers(self):
            tcfg = self.cfg.trainer
            params = [p for p in self.model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=float(tcfg.lr), weight_decay=float(tcfg.weight_decay))
            return warmup_then_decay(opt, int(tcfg.warmup_steps), int(self.trainer.estimated_stepping_batches))

        def on_train_epoch_start(self) -> None:
            self._losses, self._t_epoch = [], time.time()

        def training_step(self, batch, batch_idx):
            x, inp, lab = batch
            if self.train_data.frozen:
                out = self.model(encoder_outputs=(x,), decoder_input_ids=inp)
            else:
                out = self.model(input_features=x, decoder_input_ids=inp)
            loss = torch.nn.functional.cross_entropy(out.logits.float().transpose(1, 2), lab, ignore_index=IGNORE)
            self._losses.append(float(loss.detach()))
            self.log("train_loss", loss, batch_size=len(lab))
            return loss

        def on_validation_epoch_start(self) -> None:
            self._texts = {}

        def validation_step(self, idx, batch_idx):
            from tasks.asr.whisper_lora.decode import transcribe_features

            if self.trainer.sanity_checking:  # a CER of the untrained adapter is the model stage's zero-shot
                return
            mcfg, inputs = self.cfg.model, self.val_data.inputs[idx]
            texts = transcribe_features(self.model, inputs, self.tokens, str(mcfg.language), str(mcfg.task), len(idx),
                                        encoded=self.val_data.frozen)
            self._texts.update(zip(idx, texts))

        def on_validation_epoch_end(self) -> None:
            from tasks.asr.evaluate import aggregate, score_predictions

            if self.trainer.sanity_checking:
                return
            entries = self.val_data.entries
            rows = score_predictions([{"audio_filepath": entries[i].audio_filepath, "text": entries[i].text,
                                       "speaker": entries[i].speaker, "pred_text": t} for i, t in sorted(self._texts.items())],
                                     self.score_language)
            cer = float(aggregate(rows)["cer"])
            self.log(MONITOR, cer, sync_dist=True)
            epoch = self.current_epoch + 1
            self.history.append({"epoch": epoch, "val_cer": cer, "train_loss": float(np.mean(self._losses or [0.0])),
                                 "seconds": round(time.time() - self._t_epoch, 2), "batch_size": self.batch_size})
            msg = (f"epoch {epoch}/{self.trainer.max_epochs}: train loss {self.history[-1]['train_loss']:.4f}, "
                   f"val CER {cer:.4f} ({self.history[-1]['seconds']:.0f} s)")
            self.run_log.info(msg)
            print("  " + msg, flush=True)

    return WhisperLoRA


# ---------------------------------------------------------------- the stage

def checkpoint_epoch(path: Path) -> int:
    """1-based epoch of an engine checkpoint (Lightning stores the 0-based epoch it was written in)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"]) + 1


def train_stage(ctx) -> None:
    from tasks.asr.whisper_lora.decode import load_tokens
    from tasks.asr.whisper_lora.model import base_dir, int8_wanted, use_cuda

    cfg = ctx.cfg
    t_start = time.time()
    model_dir = base_dir(ctx.run_dir)
    tokens = load_tokens(model_dir)
    cuda = use_cuda(cfg.trainer)
    int8 = int8_wanted(cfg.lora, cuda)
    train, val = SplitData(ctx, "train", tokens), SplitData(ctx, "val", tokens)
    if not len(train):
        raise HackathonError("The train split is empty.", fix="Add training clips (see the prepare stage's summary).")
    ctx.record(int8_base=int8)

    def build_model(trainer, batch_size: int):
        model = build_lora_model(cfg, model_dir, int8)
        ctx.record(trainable_parameters=int(sum(p.numel() for p in model.parameters() if p.requires_grad)))
        return module_class()(ctx, model, tokens, train, val, batch_size)

    result = fit_resumable(ctx, build_model, cfg.trainer, batch_size=int(cfg.trainer.batch_size), monitor=MONITOR,
                           mode="min", name=CKPT_NAME, seed=int(cfg.seed),
                           keep_best=max(1, int(cfg.export.get("average_best_k", 0) or 0)))
    best = load_best_weights(result.model, result)
    if best is None:
        raise HackathonError(f"The fit left no best checkpoint in {result.checkpoint_dir}.",
                             fix="Check logs/train.log; the val split must not be empty.")
    if not result.trainer.is_global_zero:  # DDP worker: rank 0 writes the adapter and the records
        return
    best_epoch, model = checkpoint_epoch(best), result.model.model
    with atomic_dir(ctx.path(ADAPTER_DIR)) as tmp:
        model.save_pretrained(str(tmp))
        atomic_write_json(tmp / "hackathon_adapter.json", {"base": str(model_dir), "epoch": best_epoch,
                                                           "val_cer": result.best_score, "language": str(cfg.model.language),
                                                           "task": str(cfg.model.task)})
    seconds = round(time.time() - t_start, 2)
    ctx.record(best_epoch=best_epoch, best_val_cer=result.best_score, history=result.model.history)
    ctx.write_metrics({"train_seconds": seconds, "best_val_cer": result.best_score,
                       "epochs": result.trainer.current_epoch, "best_epoch": best_epoch})


def load_trained(ctx_or_run_dir, cuda: bool = False):
    """Base (fp32/fp16, never int8: inference and merging want real weights) + the best adapter."""
    from peft import PeftModel

    from tasks.asr.whisper_lora.model import base_dir, load_whisper

    run_dir = Path(getattr(ctx_or_run_dir, "run_dir", ctx_or_run_dir))
    adapter = run_dir / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        raise HackathonError(f"{adapter} is missing.", fix="Re-run from the train stage: --from train")
    return PeftModel.from_pretrained(load_whisper(base_dir(run_dir), cuda=cuda), str(adapter)).eval()

