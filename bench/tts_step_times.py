"""FastPitch and HiFiGAN step times at a given sample rate (for bench/gpu_suite.sh on a lent GPU).

Runs the TTS pipeline of a spec (default: workstation, full-size models at 44.1 kHz) on the demo speech up to
the hifigan stage with short step budgets, then prints one JSON line: seconds per FastPitch step and per
HiFiGAN step (pre-train + fine-tune; fit wall time incl. validation / steps), the sample rate, batch sizes and parameter counts, read from the run's
meta.json (hackathon/core/training.py times each fit). Same steps on every machine, so the ratio between two
machines (or 22.05 vs 44.1 kHz) is the ratio of these numbers.

    .venv/bin/python bench/tts_step_times.py [--spec workstation] [--rate 44100] [--fastpitch-steps 200]
        [--hifigan-steps 100] [--run-dir DIR] [key=value ...]

On this 2-core CPU use --spec demo (HiFiGAN ~7 s/step at 22.05 kHz).
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> dict:
    from hackathon.core.runner import execute_stages, prepare_run
    from tasks.tts.pipeline import build_stages

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="workstation")
    parser.add_argument("--rate", type=int, default=44100, choices=(22050, 44100))
    parser.add_argument("--fastpitch-steps", type=int, default=200)
    parser.add_argument("--hifigan-steps", type=int, default=100, help="split 2:1 into pre-train and fine-tune")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("overrides", nargs="*", help="extra key=value spec overrides")
    args = parser.parse_args(argv)
    pretrain = max(1, args.hifigan_steps * 2 // 3)
    finetune = max(1, args.hifigan_steps - pretrain)
    overrides = [f"data.sample_rate={args.rate}", f"fastpitch.trainer.max_steps={args.fastpitch_steps}",
                 "fastpitch.trainer.max_epochs=-1", "fastpitch.trainer.max_time=null", "hifigan.enabled=true",
                 f"hifigan.trainer.pretrain_steps={pretrain}", f"hifigan.trainer.finetune_steps={finetune}", *args.overrides]
    ctx = prepare_run("tts", overrides, spec=args.spec, run_dir=args.run_dir, new=args.run_dir is None)
    stages = build_stages(ctx.cfg)
    t0 = time.time()
    execute_stages(ctx, stages[:[s.name for s in stages].index("hifigan") + 1], echo=lambda line: None)
    fastpitch, hifigan = ctx.meta["stages"]["fastpitch"], ctx.meta["stages"]["hifigan"]
    result = {"spec": args.spec, "sample_rate": args.rate, "run_dir": str(ctx.run_dir),
              "fastpitch_steps": fastpitch["global_step"], "fastpitch_batch_size": fastpitch["batch_size"],
              "fastpitch_params": fastpitch["parameters"],
              "fastpitch_seconds_per_step": round(fastpitch["train_seconds"] / max(1, fastpitch["global_step"]), 4),
              "hifigan_steps": pretrain + finetune, "hifigan_batch_size": int(ctx.cfg.hifigan.trainer.batch_size),
              "hifigan_generator_params": hifigan["generator_parameters"],
              "hifigan_seconds_per_step": hifigan["seconds_per_step"], "total_seconds": round(time.time() - t0, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
