"""Benchmark: what launcher=torchrun costs on one machine, and how fast it recovers.

1. Wall-time ratio: the ASR demo's train stage under torchrun with 1 worker (`launcher=torchrun`) vs the
   plain run (Lightning in the `hackathon run` process), both from copies of one prepared run dir (the
   prepare + model stages done once, untimed). Goal: <= 1.10.
2. Recovery: the same torchrun run, kill -9 of the worker once an epoch is checkpointed; the time from
   the kill to training again (the restarted worker's fit resuming from last.ckpt, recorded by rank 0 as
   `resumed_at_unix` in meta.json). Goal: <= 30 s.

    flock /tmp/hackathon-cpu.lock .venv/bin/python bench/elastic_overhead.py [key=value ...]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.team import elastic_harness as h  # noqa: E402  (the tests' node/worker helpers)

DEMO = ["export.onnx=false"]


def run(args: list[str], run_dir: Path, env: dict) -> float:
    exe = Path(sys.executable).parent / "hackathon"
    t0 = time.perf_counter()
    out = subprocess.run([str(exe), "run", "asr", *args, "--run-dir", str(run_dir)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stdout[-3000:] + out.stderr[-3000:])
    return time.perf_counter() - t0


def main() -> None:
    from hackathon.core.runner import execute_stages, pipeline_module, prepare_run

    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="elastic-overhead-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(REPO), "HACKATHON_RUNS": str(work / "runs"),
               "HACKATHON_REGISTRY": str(work / "registry.sqlite"), "HACKATHON_DEMO_DATA": str(work / "demo_data")}
        os.environ.update({k: env[k] for k in ("HACKATHON_RUNS", "HACKATHON_REGISTRY", "HACKATHON_DEMO_DATA")})
        ctx = prepare_run("asr", DEMO + extra, run_dir=work / "template")
        execute_stages(ctx, [s for s in pipeline_module("asr").build_stages(ctx.cfg) if s.name in ("prepare", "model")],
                       echo=lambda s: None)
        results = {}
        for name, args in (("plain", DEMO + extra), ("torchrun", DEMO + extra + ["launcher=torchrun"])):
            rd = work / name
            shutil.copytree(work / "template", rd)
            wall = run(args, rd, env)
            train = json.loads((rd / "meta.json").read_text())["stages"]["train"]
            results[name] = {"wall_s": round(wall, 1), "train_stage_s": train["seconds"],
                             "cer": json.loads((rd / "metrics.json").read_text()).get("cer")}
        ratio = results["torchrun"]["train_stage_s"] / results["plain"]["train_stage_s"]

        # recovery: kill -9 the (single) worker once an epoch is checkpointed
        rd = work / "kill"
        shutil.copytree(work / "template", rd)
        node = h.start_node("asr", rd, DEMO + extra + ["launcher=torchrun", "elastic.monitor_interval=0.5"], env,
                            work / "kill.log")
        try:
            h.wait_until(lambda: h.epochs_checkpointed(rd / "checkpoints" / "fit" / "last.ckpt") >= 1, 900,
                         "an epoch checkpointed", [node])
            pid = h.wait_until(lambda: h.worker_pids(rd).get(0), 60, "the worker", [node])
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            h.finish([node], 1800)
        finally:
            h.cleanup([node])
        starts = json.loads((rd / "meta.json").read_text())["stages"]["train"]["elastic"]["starts"]
        recovery = starts[-1]["resumed_at_unix"] - killed
    print(f"plain run:    train stage {results['plain']['train_stage_s']:.1f} s (wall {results['plain']['wall_s']} s, CER {results['plain']['cer']})")
    print(f"torchrun (1): train stage {results['torchrun']['train_stage_s']:.1f} s (wall {results['torchrun']['wall_s']} s, CER {results['torchrun']['cer']})")
    print(f"ratio torchrun/plain (train stage): {ratio:.3f}  (goal <= 1.10)")
    print(f"kill -9 of the worker -> training again: {recovery:.1f} s  (goal <= 30 s; restarts: {len(starts) - 1})")


if __name__ == "__main__":
    main()
