"""Benchmark: `hackathon serve` under concurrent load, on loopback only, bounded in time and count.

1. Starts `hackathon serve` on free 127.0.0.1 ports with the given run dirs (default: the scoreboard's best).
2. For each model in --models (asr, gate) and each client count in --clients (8, 32): that many threads,
   each with its own tritonclient HTTP connection, send requests back to back for --seconds (or until
   --max-requests in total) — ASR: the ASR run's held-out test clips round-robin; gate: those clips with
   a demo mask image and a name. Throughput (requests/s), p50/p95/p99 latency (ms), errors (must be 0).
3. Stops the server, then times in-process NeMo `transcribe()` (the run's exported .nemo) of the SAME clips
   one at a time for --seconds; the ratio served-ASR clips/s (best client count) / in-process clips/s is the
   dynamic-batching gain (goal >= 1.5x). Both sides share this machine's cores; nothing else is timed.

    flock /tmp/hackathon-cpu.lock .venv/bin/python bench/serve_load.py [--asr RUN --tts RUN --detect RUN]
        [--seconds 60] [--clients 8,32] [--models asr,gate] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_server(run_dirs: dict, log: Path):
    from hackathon.serve.server import wait_ready

    http, grpc, metrics = free_ports(3)
    cmd = [str(Path(sys.executable).parent / "hackathon"), "serve", "--host", "127.0.0.1",
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    for task, run_dir in run_dirs.items():
        if run_dir:
            cmd += [f"--{task}", str(run_dir)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(f"127.0.0.1:{http}", timeout_s=300)
    except Exception:
        proc.kill()
        raise
    return proc, f"127.0.0.1:{http}"


def test_clips(asr_run: Path, limit: int) -> tuple[list[np.ndarray], list[str], list[str]]:
    from data_tools.audio import read_audio

    rows = [json.loads(x) for x in (asr_run / "predictions.jsonl").read_text().splitlines()][:limit]
    clips = [read_audio(r["audio_filepath"])[0].astype(np.float32) for r in rows]
    return clips, [r["text"] for r in rows], [r["audio_filepath"] for r in rows]


def mask_png() -> np.ndarray:
    from data_tools.detection.synth_masks import draw_image

    for seed in range(500):
        img, objects = draw_image(random.Random(seed), 320, 320, max_faces=1)
        if len(objects) == 1 and objects[0][0] == "with_mask":
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            return np.frombuffer(buf.getvalue(), dtype=np.uint8)
    raise RuntimeError("no single with_mask image")


def request_inputs(model: str, clip: np.ndarray, image: np.ndarray):
    import tritonclient.http as httpclient

    def tensor(name, arr, dtype):
        t = httpclient.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        return t

    inputs = [tensor("audio", clip[None, :], "FP32")]
    if model == "gate":
        inputs += [tensor("image", image[None, :], "UINT8"),
                   tensor("name", np.array([["王芳".encode()]], dtype=object), "BYTES")]
    return inputs


def load_test(url: str, model: str, clients: int, seconds: float, max_requests: int, clips, image) -> dict:
    import tritonclient.http as httpclient

    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds
    sent = [0]

    def worker(k: int):
        c = httpclient.InferenceServerClient(url, network_timeout=600, connection_timeout=600)
        i = k
        while time.monotonic() < deadline:
            with lock:
                if sent[0] >= max_requests:
                    return
                sent[0] += 1
            inputs = request_inputs(model, clips[i % len(clips)], image)
            i += clients
            t0 = time.perf_counter()
            try:
                c.infer(model, inputs)
                with lock:
                    latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(exc)[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"model": model, "clients": clients, "seconds": round(wall, 1), "requests": len(latencies),
            "throughput_rps": round(len(latencies) / wall, 2), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def in_process_nemo(asr_run: Path, paths: list[str], clips, seconds: float) -> dict:
    """NeMo transcribe() of the same clips, one clip per call, for `seconds` (after one warm-up call)."""
    from tasks.asr.model import restore_model
    from tasks.asr.transcribe import transcribe_arrays

    model = restore_model(asr_run / "export" / "asr_model.nemo")
    transcribe_arrays(model, [clips[0]], batch_size=1)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        transcribe_arrays(model, [clips[done % len(clips)]], batch_size=1)
        done += 1
    wall = time.perf_counter() - t0
    return {"clips": done, "seconds": round(wall, 1), "clips_per_s": round(done / wall, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for task in ("asr", "tts", "detect"):
        parser.add_argument(f"--{task}", type=Path, default=None, help=f"{task} run dir (default: scoreboard best)")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each load test")
    parser.add_argument("--clients", default="8,32", help="concurrent client counts")
    parser.add_argument("--models", default="asr,gate", help="models to load")
    parser.add_argument("--max-requests", type=int, default=20000, help="bound on requests per load test")
    parser.add_argument("--clips", type=int, default=54, help="held-out clips used (round-robin)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from hackathon.serve.server import resolve_run_dirs

    run_dirs = resolve_run_dirs(args.asr, args.tts, args.detect)
    clips, texts, paths = test_clips(run_dirs["asr"], args.clips)
    image = mask_png()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve_load_{os.getpid()}.log"
    proc, url = start_server(run_dirs, log)
    results = {"run_dirs": {k: str(v) for k, v in run_dirs.items()}, "clips": len(clips),
               "clip_seconds_mean": round(float(np.mean([len(c) / 16000 for c in clips])), 2), "load": []}
    try:
        for model in args.models.split(","):
            # one untimed request per model first: the first call pays lazy initialisation
            import tritonclient.http as httpclient

            httpclient.InferenceServerClient(url, network_timeout=600).infer(model, request_inputs(model, clips[0], image))
            for clients in (int(c) for c in args.clients.split(",")):
                r = load_test(url, model, clients, args.seconds, args.max_requests, clips, image)
                print(json.dumps(r, ensure_ascii=False), flush=True)
                results["load"].append(r)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    results["in_process_nemo"] = in_process_nemo(run_dirs["asr"], paths, clips, args.seconds)
    print(json.dumps(results["in_process_nemo"]), flush=True)
    served = max((r["throughput_rps"] for r in results["load"] if r["model"] == "asr"), default=None)
    if served:
        results["served_asr_vs_in_process"] = round(served / results["in_process_nemo"]["clips_per_s"], 2)
    print(json.dumps({k: v for k, v in results.items() if k != "load"}, ensure_ascii=False, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n")
    return 1 if any(r["errors"] for r in results["load"]) else 0


if __name__ == "__main__":
    sys.exit(main())
