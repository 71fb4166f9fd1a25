"""The GPU check (run through bench/gpu_suite.sh): one pass over what a GPU workstation must show, in one
process per section, results in bench/gpu_results.json.

Sections (each records its numbers, or its error, and the suite goes on):
- asr:        the ASR workstation model (specs/asr/workstation.yaml, from scratch on the demo corpus: no
              network) — our train stage with AMP vs a bare NeMo trainer.fit on the same config
              (utterances/s each, ratio; bench/asr_overhead.py's two timings);
- fastpitch / hifigan: the TTS workstation spec's FastPitch and HiFiGAN at its batch sizes (32 / 16) on
              the demo corpus: seconds per training step; hifigan_finetune: the HiFiGAN fine-tune from an
              init .nemo (`hifigan.init`, here the one just trained: no network) on FastPitch's mels;
- ssd300:     torchvision ssd300_vgg16 training steps at the detect workstation batch size (32), AMP: it/s;
- torchrun:   `hackathon run asr launcher=torchrun` on 1 GPU (the elastic launcher end to end);
- peak GPU memory per section (torch.cuda.max_memory_allocated).

--dry-run (or no GPU): the same code paths at CPU sizes (demo specs, tiny models, a few steps) so CI
proves the suite runs; its numbers are not GPU numbers and say so (`"dry_run": true`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def peak_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


# ----------------------------------------------------------------------------- sections

def asr_section(dry: bool, work: Path) -> dict:
    import nemo.collections.asr  # noqa: F401  (import cost paid before either timing)
    from asr_overhead import prepared_run, time_bare, time_ours

    if dry:
        spec, overrides = None, ["trainer.max_epochs=1", "data.demo.renditions=1", "export.onnx=false"]
    else:  # the workstation model from scratch on the demo corpus (the GPU machine has no network)
        spec, overrides = "workstation", ["model.init=scratch", "data.source=null", "trainer.max_epochs=3",
                                          "trainer.devices=1", "data.num_workers=4"]
    os.environ["HACKATHON_DEMO_DATA"] = str(work / "demo_data")
    ctx, train_stage = prepared_run_with_spec(prepared_run, work / "asr", overrides, spec)
    ours = time_ours(ctx, train_stage)
    bare = time_bare(ctx, work / "asr")
    n_train = int(ctx.meta["stages"]["prepare"].get("n_train") or 0)
    epochs = int(ctx.cfg.trainer.max_epochs)
    from hackathon.core.training import trainer_settings

    return {"spec": spec or "demo", "precision": trainer_settings(ctx.cfg.trainer)["precision"],
            "batch_size": int(ctx.cfg.trainer.batch_size), "epochs": epochs, "train_utterances": n_train,
            "ours_seconds": round(ours, 2), "bare_seconds": round(bare, 2),
            "ours_utts_per_s": round(n_train * epochs / ours, 1), "bare_utts_per_s": round(n_train * epochs / bare, 1),
            "ratio_ours_over_bare": round(ours / bare, 3)}


def prepared_run_with_spec(prepared_run, workdir: Path, overrides: list[str], spec: str | None):
    """bench/asr_overhead.prepared_run with a spec name (it uses the demo spec)."""
    if spec is None:
        return prepared_run(workdir, overrides)
    from hackathon.core.runner import execute_stages, pipeline_module, prepare_run

    ctx = prepare_run("asr", overrides, spec=spec, run_dir=workdir / "ours")
    stages = pipeline_module("asr").build_stages(ctx.cfg)
    execute_stages(ctx, [s for s in stages if s.name in ("prepare", "model")], echo=lambda s: None)
    return ctx, [s for s in stages if s.name == "train"]


TTS_TINY = ["fastpitch.model_overrides.model.symbols_embedding_dim=32",
            "fastpitch.model_overrides.model.input_fft.n_layer=1", "fastpitch.model_overrides.model.output_fft.n_layer=1",
            "fastpitch.model_overrides.model.input_fft.d_inner=64", "fastpitch.model_overrides.model.output_fft.d_inner=64",
            "fastpitch.trainer.batch_size=4", "hifigan.trainer.batch_size=2"]


def tts_sections(dry: bool, work: Path) -> dict:
    """FastPitch and HiFiGAN seconds per step on the demo corpus (the stages' own fits)."""
    from hackathon.core.runner import execute_stages, pipeline_module, prepare_run

    steps_fp, steps_hg = (3, 1) if dry else (200, 100)
    common = [f"+fastpitch.trainer.max_steps={steps_fp}", "fastpitch.trainer.max_time=null",
              "fastpitch.trainer.check_val_every_n_epoch=1000", "hifigan.enabled=true", "hifigan.init=scratch",
              f"hifigan.trainer.pretrain_steps={steps_hg}", f"hifigan.trainer.finetune_steps={steps_hg}"]
    spec = None if dry else "workstation"
    overrides = common + (TTS_TINY if dry else [])
    if dry:  # the TTS tests' 9-utterance corpus instead of the demo corpus (whose pitch extraction takes minutes)
        from tests.team.elastic_harness import tiny_tts_corpus

        overrides.append(f"data.source={tiny_tts_corpus(work / 'tts_corpus')}")
    os.environ["HACKATHON_DEMO_DATA"] = str(work / "demo_data")
    ctx = prepare_run("tts", overrides, spec=spec, run_dir=work / "tts")
    wanted = ("prepare", "g2p", "sup_data", "fastpitch", "mels", "hifigan")
    stages = [s for s in pipeline_module("tts").build_stages(ctx.cfg) if s.name in wanted]
    times = {}
    for stage in stages:
        reset_peak()
        t0 = time.perf_counter()
        execute_stages(ctx, [stage], echo=lambda s: None)
        times[stage.name] = (time.perf_counter() - t0, peak_memory())
    fp, hg = ctx.meta["stages"]["fastpitch"], ctx.meta["stages"]["hifigan"]
    fp_steps = max(1, int(fp.get("global_step") or steps_fp))
    init = work / "hifigan_init.nemo"
    init.write_bytes((ctx.run_dir / "models" / "hifigan.nemo").read_bytes())
    again = prepare_run("tts", overrides + [f"hifigan.init={init}"], spec=spec, run_dir=work / "tts")
    reset_peak()
    execute_stages(again, [s for s in stages if s.name == "hifigan"], echo=lambda s: None)
    fine = again.meta["stages"]["hifigan"]
    return {
        "fastpitch": {"batch_size": int(ctx.cfg.fastpitch.trainer.batch_size), "steps": fp_steps,
                      "seconds_per_step": round(float(fp.get("train_seconds") or times["fastpitch"][0]) / fp_steps, 4),
                      "note": "fit wall time / steps (Lightning start-up included)", **times["fastpitch"][1]},
        "hifigan": {"batch_size": int(ctx.cfg.hifigan.trainer.batch_size), "steps": 2 * steps_hg,
                    "seconds_per_step": hg.get("seconds_per_step"), **times["hifigan"][1]},
        "hifigan_finetune": {"batch_size": int(again.cfg.hifigan.trainer.batch_size), "steps": steps_hg,
                             "seconds_per_step": round(float(fine["finetune_seconds"]) / steps_hg, 4),
                             "loaded_tensors": fine["init"]["hifigan"]["loaded"], **peak_memory()},
        "tts_data_seconds": round(sum(times[n][0] for n in ("prepare", "g2p", "sup_data")), 1),
    }


def ssd_section(dry: bool, work: Path) -> dict:
    import torch

    from tasks.detect.ssd import build_model

    device = torch.device("cuda" if gpu() and not dry else "cpu")
    name, size, batch, steps = ("ssdlite320_mobilenet_v3_large", 128, 2, 2) if dry else ("ssd300_vgg16", 300, 32, 30)
    model = build_model(name, 3, input_size=size).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0]], device=device) * size / 300,
                "labels": torch.tensor([1 + i % 3], device=device)} for i in range(batch)]

    def step():
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    reset_peak()
    step()  # warm-up (cuDNN autotune, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"model": name, "input_size": size, "batch_size": batch, "steps": steps, "amp": device.type == "cuda",
            "it_per_s": round(steps / seconds, 2), "images_per_s": round(steps * batch / seconds, 1), **peak_memory()}


def torchrun_section(dry: bool, work: Path) -> dict:
    """The user's command with launcher=torchrun on one GPU (CPU in the dry run)."""
    exe = Path(sys.executable).parent / "hackathon"
    run_dir = work / "torchrun"
    args = [str(exe), "run", "asr", "launcher=torchrun", "export.onnx=false", "data.demo.renditions=1",
            f"trainer.max_epochs={1 if dry else 5}", "--run-dir", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HACKATHON_DEMO_DATA": str(work / "demo_data")}
    t0 = time.perf_counter()
    out = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"exit {out.returncode}: {(out.stdout + out.stderr)[-1500:]}")
    meta = json.loads((run_dir / "meta.json").read_text())
    train = meta["stages"]["train"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"wall_seconds": round(seconds, 1), "train_seconds": train.get("seconds"),
            "world_sizes": train["elastic"]["world_sizes"], "restarts": train["elastic"]["restarts"],
            "cer": metrics.get("cer"), "status": meta["status"]}


SECTIONS = {"asr": asr_section, "tts": tts_sections, "ssd300": ssd_section, "torchrun": torchrun_section}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU sizes (automatic without a GPU)")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run just these sections")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "gpu_results.json")
    args = parser.parse_args()
    dry = args.dry_run or not gpu()
    results: dict = {"dry_run": dry, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "sections": {}}
    if not dry:
        import torch

        results["gpu"] = torch.cuda.get_device_name(0)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        for name in args.only or list(SECTIONS):
            print(f"[gpu_suite] {name} ...", flush=True)
            t0 = time.perf_counter()
            try:
                reset_peak()
                value = SECTIONS[name](dry, Path(tmp))
            except Exception as exc:  # one broken section must not hide the others' numbers
                value = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                traceback.print_exc()
            value["section_seconds"] = round(time.perf_counter() - t0, 1)
            results["sections"][name] = value
            print(f"[gpu_suite] {name}: {json.dumps(value)}", flush=True)
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from hackathon.core.atomic import atomic_write_json

    atomic_write_json(args.out, results)
    print(f"[gpu_suite] wrote {args.out} ({results['total_seconds']} s)")
    return 1 if any("error" in v for v in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
