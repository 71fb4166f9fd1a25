"""GPU benchmark: Whisper LoRA training steps/s and peak GPU memory, int8 base vs fp16 base.

The recipe teams follow (int8 base via bitsandbytes + prepare_model_for_kbit_training, LoRA on
q_proj/v_proj of encoder and decoder, fp16 autocast) against the same LoRA on an fp16 base. Both modes
run in this one process on the same random 30 s features and 24-token targets, `--steps` timed
optimizer steps after `--warmup` untimed ones; peak memory = torch.cuda.max_memory_allocated.

    .venv/bin/python bench/whisper_lora_gpu.py [--base packaged:base] [--batch-size 8] [--steps 20] [--json OUT]

bench/gpu_suite.sh calls it (or `measure()` from Python). Without CUDA it prints why and exits 0 with
{"skipped": ...}, so a CPU-only suite does not fail on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure_mode(model_dir: Path, int8: bool, batch_size: int, steps: int, warmup: int, lora: dict) -> dict:
    import torch
    from omegaconf import OmegaConf
    from peft import get_peft_model, prepare_model_for_kbit_training

    from tasks.asr.whisper_lora.model import load_whisper
    from tasks.asr.whisper_lora.train import lora_config

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    base = load_whisper(model_dir, cuda=True, int8=int8)
    if int8:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    model = get_peft_model(base, lora_config(OmegaConf.create(lora)))
    params = [p for p in model.parameters() if p.requires_grad]
    if not int8:  # fp16 base: the adapter weights stay fp32 (master weights), matmuls under autocast
        for p in params:
            p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    n_mels = base.config.num_mel_bins
    feats = torch.randn(batch_size, n_mels, 3000, device="cuda")
    targets = torch.randint(0, 50000, (batch_size, 24), device="cuda")
    model.train()

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(input_features=feats.half() if not int8 else feats, decoder_input_ids=targets)
            loss = torch.nn.functional.cross_entropy(out.logits.float().transpose(1, 2), targets)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result = {"mode": "int8+lora" if int8 else "fp16+lora", "steps_per_s": round(steps / seconds, 3),
              "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3), "batch_size": batch_size,
              "trainable_parameters": int(sum(p.numel() for p in params))}
    del model, base, opt
    torch.cuda.empty_cache()
    return result


def measure(base: str = "packaged:base", batch_size: int = 8, steps: int = 20, warmup: int = 3,
            lora: dict | None = None) -> dict:
    """{"int8": {...}, "fp16": {...}, "memory_ratio_int8_vs_fp16", "speed_ratio_int8_vs_fp16"} or {"skipped"}."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU visible (torch.cuda.is_available() is False)"}
    from tasks.asr.whisper_lora.weights import transformers_dir

    lora = lora or {"r": 32, "alpha": 64, "target_modules": ["q_proj", "v_proj"], "dropout": 0.05, "bias": "none"}
    model_dir = transformers_dir(base)
    fp16 = measure_mode(model_dir, False, batch_size, steps, warmup, lora)
    int8 = measure_mode(model_dir, True, batch_size, steps, warmup, lora)
    return {"base": base, "gpu": torch.cuda.get_device_name(0), "fp16": fp16, "int8": int8,
            "memory_ratio_int8_vs_fp16": round(int8["peak_memory_gib"] / fp16["peak_memory_gib"], 3),
            "speed_ratio_int8_vs_fp16": round(int8["steps_per_s"] / fp16["steps_per_s"], 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="packaged:base", help="model.init: packaged:base, a folder or a Hub name")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = measure(args.base, args.batch_size, args.steps, args.warmup)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from hackathon.core.atomic import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
