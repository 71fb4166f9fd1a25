"""Benchmark: `hackathon serve` under concurrent load, on loopback only, bounded in time and count.

1. Starts `hackathon serve` on free 127.0.0.1 ports with the given run dirs (default: the scoreboard's best).
2. For each model in --models (asr, gate) and each client count in --clients (8, 32): that many threads,
   each with its own tritonclient HTTP connection, send requests back to back for --seconds (or until
   --max-requests in total) — ASR: the ASR run's held-out test clips round-robin; gate: those clips with
   a demo mask image and a name. Throughput (requests/s), p50/p95/p99 latency (ms), errors (must be 0).
3. Stops the server, then times in-process NeMo `transcribe()` (the run's exported .nemo) of the SAME clips
   one at a time for --seconds; the ratio served-ASR clips/s (best client count) / in-process clips/s is the
   dynamic-batching gain (goal >= 1.5x). Both sides share this machine's cores; nothing else is timed.
   Gate: --gate-clients (1, 8, 32), clips the ASR run transcribed right, so each answer's decision is known:
   `wrong_decisions` counts answers (cached replies included) that differ from it (must be 0).
4. --deployed: the `deploy triton-repo` repository on the bundled tritonserver, gate with serial vs async BLS.

    flock /tmp/cpu.lock .venv/bin/python bench/serve_load.py [--asr RUN --tts RUN --detect RUN]
        [--seconds 60] [--clients 8,32] [--gate-clients 1,8,32] [--models asr,gate] [--set server.K=V]
        [--deployed] [--no-in-process] [--json out.json]
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


def start_server(run_dirs: dict, log: Path, overrides=()):
    from hackathon.serve.server import wait_ready

    http, grpc, metrics = free_ports(3)
    cmd = [str(Path(sys.executable).parent / "hackathon"), "serve", "--host", "127.0.0.1",
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), *overrides]
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


def test_clips(asr_run: Path, limit: int, said_right: bool = False) -> tuple[list[np.ndarray], list[str], list[str]]:
    """The run's held-out clips; `said_right`: only those its evaluation transcribed exactly (the gate's
    expected decision is then known)."""
    from data_tools.audio import read_audio

    rows = [json.loads(x) for x in (asr_run / "predictions.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["pred_text"] == r["text"] or not said_right][:limit]
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


def expected_decisions(texts: list[str]) -> list[tuple]:
    """(admit, reply_text) the gate owes each clip said right, with the with_mask image and the name 王芳."""
    from omegaconf import OmegaConf

    from hackathon.serve.gate import decide
    from hackathon.serve.server import load_serve_config

    gate = OmegaConf.to_container(load_serve_config(None).gate, resolve=True)
    return [(d.admit, d.reply_text) for d in (decide(t, [1.0], ["with_mask"], "王芳", gate) for t in texts)]


def load_test(url: str, model: str, clients: int, seconds: float, max_requests: int, clips, image,
              expected=None) -> dict:
    import tritonclient.http as httpclient

    latencies, errors, wrong, lock = [], [], [], threading.Lock()
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
            k_clip = i % len(clips)
            inputs = request_inputs(model, clips[k_clip], image)
            i += clients
            t0 = time.perf_counter()
            try:
                result = c.infer(model, inputs)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                if expected is not None:  # a cached reply must never be another request's
                    got = (bool(result.as_numpy("admit")[0][0]), result.as_numpy("reply_text")[0][0].decode())
                    if got != expected[k_clip] or result.as_numpy("reply_audio").size == 0:
                        with lock:
                            wrong.append((k_clip, got))
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
            "errors": len(errors), "first_error": errors[0] if errors else None,
            **({"wrong_decisions": len(wrong)} if expected is not None else {})}


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


def deployed_gate(run_dirs: dict, clips, image, expected, clients_list, seconds, max_requests,
                  modes=("serial", "async")) -> list[dict]:
    """The deployed repository (`deploy triton-repo`) on the bundled tritonserver (networks through the tests'
    onnxruntime stand-in, tests/serve/triton_deployed.py): gate latency with serial vs async BLS, reply cache
    off so every request does asr + detect + tts."""
    import tempfile

    from hackathon.serve.server import load_serve_config
    from hackathon.serve.triton_repo import write_repository
    from tests.serve.triton_deployed import prepare_for_bundled_server, start_deployed

    out = []
    for concurrent in (mode == "async" for mode in modes):
        work = Path(tempfile.mkdtemp(prefix="serve_load_repo_"))
        cfg = load_serve_config(None, [f"deploy.concurrent_bls={str(concurrent).lower()}", "gate.reply_cache=0"])
        write_repository(work / "repo", run_dirs, cfg)
        prepare_for_bundled_server(work / "repo")
        server = start_deployed(work / "repo", work, free_ports(2))
        try:
            load_test(server.http, "gate", 1, 5, 3, clips, image)  # warm-up
            for clients in clients_list:
                r = load_test(server.http, "gate", clients, seconds, max_requests, clips, image, expected)
                r.update(server="deployed repository", bls="async" if concurrent else "serial", reply_cache=0)
                print(json.dumps(r, ensure_ascii=False), flush=True)
                out.append(r)
        finally:
            server.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for task in ("asr", "tts", "detect"):
        parser.add_argument(f"--{task}", type=Path, default=None, help=f"{task} run dir (default: scoreboard best)")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of each load test")
    parser.add_argument("--clients", default="8,32", help="concurrent client counts (asr)")
    parser.add_argument("--gate-clients", default="1,8,32", help="concurrent client counts (gate)")
    parser.add_argument("--models", default="asr,gate", help="models to load")
    parser.add_argument("--max-requests", type=int, default=20000, help="bound on requests per load test")
    parser.add_argument("--clips", type=int, default=54, help="held-out clips used (round-robin)")
    parser.add_argument("--set", action="append", default=[], help="serve spec override key=value (repeatable)")
    parser.add_argument("--deployed", action="store_true",
                        help="also: the deployed repository's gate, serial vs async BLS (bundled tritonserver)")
    parser.add_argument("--deployed-bls", default="serial,async", help="BLS modes --deployed measures")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process NeMo baseline")
    parser.add_argument("--no-serve", action="store_true", help="skip `hackathon serve` (with --deployed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    from hackathon.serve.server import resolve_run_dirs

    run_dirs = resolve_run_dirs(args.asr, args.tts, args.detect)
    clips, texts, paths = test_clips(run_dirs["asr"], args.clips)
    gate_clips, gate_texts, _ = test_clips(run_dirs["asr"], args.clips, said_right=True)
    expected = expected_decisions(gate_texts)
    image = mask_png()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve_load_{os.getpid()}.log"
    results = {"run_dirs": {k: str(v) for k, v in run_dirs.items()}, "serve_overrides": args.set, "clips": len(clips),
               "clip_seconds_mean": round(float(np.mean([len(c) / 16000 for c in clips])), 2), "load": []}
    proc, url = start_server(run_dirs, log, args.set) if not args.no_serve else (None, None)
    try:
        for model in args.models.split(",") if proc else []:
            # one untimed request per model first: the first call pays lazy initialisation
            import tritonclient.http as httpclient

            httpclient.InferenceServerClient(url, network_timeout=600).infer(model, request_inputs(model, clips[0], image))
            gate = model == "gate"
            for clients in (int(c) for c in (args.gate_clients if gate else args.clients).split(",")):
                r = load_test(url, model, clients, args.seconds, args.max_requests, *(
                    (gate_clips, image, expected) if gate else (clips, image)))
                print(json.dumps(r, ensure_ascii=False), flush=True)
                results["load"].append(r)
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    if args.deployed:
        results["deployed_gate"] = deployed_gate(run_dirs, gate_clips, image, expected,
                                                 [int(c) for c in args.gate_clients.split(",")], args.seconds,
                                                 args.max_requests, args.deployed_bls.split(","))
    if not args.no_in_process:
        results["in_process_nemo"] = in_process_nemo(run_dirs["asr"], paths, clips, args.seconds)
        print(json.dumps(results["in_process_nemo"]), flush=True)
        served = max((r["throughput_rps"] for r in results["load"] if r["model"] == "asr"), default=None)
        if served:
            results["served_asr_vs_in_process"] = round(served / results["in_process_nemo"]["clips_per_s"], 2)
    print(json.dumps({k: v for k, v in results.items() if k not in ("load", "deployed_gate")}, ensure_ascii=False,
                     indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n")
    everything = results["load"] + results.get("deployed_gate", [])
    return 1 if any(r["errors"] or r.get("wrong_decisions") for r in everything) else 0


if __name__ == "__main__":
    sys.exit(main())
