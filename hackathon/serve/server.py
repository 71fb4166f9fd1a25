"""`hackathon serve`: the real Triton Inference Server (pytriton's bundled tritonserver) with the models
asr, tts, detect and gate, each from a run dir (default: the scoreboard's best run of each task).

Tensor interface (docs/SERVING.md, stable; every input/output has a leading batch dimension):
  asr    in audio FP32 [-1]                              out text BYTES [1]
  tts    in text BYTES [1]                               out audio FP32 [-1], sample_rate INT32 [1]
  detect in image UINT8 [-1] (JPEG/PNG bytes)            out boxes FP32 [-1,4], scores FP32 [-1], labels BYTES [-1]
  gate   in audio, image, name BYTES [1]                 out transcript BYTES [1], phrase_ok BOOL [1], mask BYTES [1],
                                                             admit BOOL [1], reply_text BYTES [1],
                                                             reply_audio FP32 [-1], sample_rate INT32 [1]

Dynamic batching: each model has max_batch_size and a DynamicBatcher; the callables take pytriton's list
of requests (a dynamic batch) and run the predictor once over all of them (ragged audio and images cannot
go through pytriton's @batch, which np.concatenates the requests). Input checks run per request in the
stub (hackathon/serve/shim.py), so the callables only ever see valid requests.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from hackathon.core.errors import HackathonError

TASK_OF_MODEL = {"asr": "asr", "tts": "tts", "detect": "detect"}
MODELS = ("asr", "tts", "detect", "gate")


# ---------------------------------------------------------------- run dirs + predictors

def default_run_dirs() -> dict[str, Path | None]:
    """The scoreboard's best run of each task (hackathon score)."""
    from hackathon.scoreboard import best_runs

    return {row["task"]: Path(row["best"]["run_dir"]) if row["best"] else None for row in best_runs()}


def resolve_run_dirs(asr: Path | None, tts: Path | None, detect: Path | None) -> dict[str, Path]:
    given = {"asr": asr, "tts": tts, "detect": detect}
    best = default_run_dirs() if any(v is None for v in given.values()) else {}
    chosen = {}
    for task, run_dir in given.items():
        run_dir = run_dir if run_dir is not None else best.get(task)
        if run_dir is None:
            raise HackathonError(f"No {task} model to serve: no --{task} RUN_DIR given and the scoreboard has no "
                                 f"scored {task} run.",
                                 fix=f"Run `hackathon run {task}` (or `hackathon run all`) first, or pass "
                                     f"--{task} RUN_DIR.")
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise HackathonError(f"--{task} {run_dir}: not a directory.", fix=f"Pass a `hackathon run {task}` run dir "
                                 f"(see `hackathon runs --task {task}`).")
        chosen[task] = run_dir.resolve()
    return chosen


def load_predictors(run_dirs: dict[str, Path]) -> dict:
    """The export helper's in-process ONNX predictors, one per task (tasks/<task>/onnx_infer.py)."""
    import importlib

    predictors = {}
    for task, run_dir in run_dirs.items():
        module = importlib.import_module(f"tasks.{task}.onnx_infer")
        # the run's HiFiGAN when it exported one: a network call instead of Griffin-Lim's iterations
        hifigan = task == "tts" and (run_dir / "export" / module.HIFIGAN_ONNX).is_file()
        predictors[task] = module.load(run_dir, vocoder="hifigan") if hifigan else module.load(run_dir)
    return predictors


# ---------------------------------------------------------------- the model callables

def _bytes_col(values: Sequence[str]) -> np.ndarray:
    return np.array([[v.encode("utf-8")] for v in values], dtype=object)


# PyTriton cannot send a zero-size output (its validator reads element 0, its shared-memory copy refuses
# empty views: the request fails with 500), so a batch where every row is empty gets one padding slot.
MIN_OUTPUT_WIDTH = 1


def _pad_rows(rows: list[np.ndarray], dtype) -> np.ndarray:
    """Rows of different lengths -> [n, max_len] (zeros after each row); one row stays as it is."""
    width = max(max((len(r) for r in rows), default=0), MIN_OUTPUT_WIDTH)
    out = np.zeros((len(rows), width), dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _per_request(requests, model: str, limits: dict, run_rows: Callable[[dict], list[dict]]) -> list[dict]:
    """Decode every request (already checked by the stub shim), run all rows of the dynamic batch at once,
    and split the outputs back per request."""
    from hackathon.serve.inputs import decode_request

    return run_decoded([decode_request(model, {k: np.asarray(v) for k, v in r.items()}, limits) for r in requests],
                       run_rows)


def run_decoded(decoded: list[dict], run_rows: Callable[[dict], list[dict]]) -> list[dict]:
    """The decoded requests of one dynamic batch -> one predictor call over all their rows -> outputs per request."""
    if not decoded:
        return []
    counts = [len(next(iter(d.values()))) for d in decoded]
    flat = {k: [row for d in decoded for row in d[k]] for k in decoded[0]}
    rows = run_rows(flat)
    out, start = [], 0
    for n in counts:
        out.append(_stack(rows[start:start + n]))
        start += n
    return out


def _stack(rows: list[dict]) -> dict:
    result = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], np.ndarray) and values[0].dtype != object and values[0].ndim == 1 \
                and key in ("audio", "reply_audio", "scores"):
            result[key] = _pad_rows(values, values[0].dtype)
        elif key == "boxes":
            width = max(max(len(v) for v in values), MIN_OUTPUT_WIDTH)
            arr = np.zeros((len(values), width, 4), dtype=np.float32)
            for i, v in enumerate(values):
                arr[i, :len(v)] = v
            result[key] = arr
        elif key == "labels":
            width = max(max(len(v) for v in values), MIN_OUTPUT_WIDTH)
            arr = np.full((len(values), width), b"", dtype=object)
            for i, v in enumerate(values):
                arr[i, :len(v)] = [s.encode("utf-8") for s in v]
            result[key] = arr
        else:
            result[key] = np.stack(values)
    return result


class Models:
    """The four inference callables over the in-process predictors (thread-safe: ONNX Runtime sessions are)."""

    def __init__(self, predictors: dict, cfg, limits: dict | None = None):
        """`predictors`: task -> predictor (all three for `serve`; one for a deployed Python model)."""
        from omegaconf import OmegaConf

        self.asr, self.tts, self.detect = (predictors.get(t) for t in ("asr", "tts", "detect"))
        self.limits = limits if limits is not None else OmegaConf.to_container(cfg.limits, resolve=True)
        self.gate_cfg = OmegaConf.to_container(cfg.gate, resolve=True) if cfg is not None else None
        self.tts_rate = int(self.tts.sample_rate) if self.tts is not None else None
        from hackathon.serve.gate import ReplyCache

        self.replies = ReplyCache(self.gate_cfg["reply_cache"] if self.gate_cfg else 0)

    # each run_* takes the flattened rows of one dynamic batch and returns one output dict per row
    def run_asr(self, rows: dict) -> list[dict]:
        texts = self.asr.transcribe_batch(rows["audio"])
        return [{"text": np.array([t.encode("utf-8")], dtype=object)} for t in texts]

    def run_tts(self, rows: dict) -> list[dict]:
        out = []
        for text in rows["text"]:
            audio = np.asarray(self.tts.synthesize(text), dtype=np.float32).reshape(-1)
            out.append({"audio": audio, "sample_rate": np.array([self.tts_rate], dtype=np.int32)})
        return out

    def _detect_rows(self, images) -> list[tuple]:
        return [self.detect.detect(img) for img in images]

    def run_detect(self, rows: dict) -> list[dict]:
        out = []
        for boxes, scores, labels in self._detect_rows(rows["image"]):
            out.append({"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                        "scores": np.asarray(scores, dtype=np.float32).reshape(-1), "labels": list(labels)})
        return out

    def run_gate(self, rows: dict) -> list[dict]:
        return [self.gate_row(t, det, name) for t, det, name in
                zip(self.asr.transcribe_batch(rows["audio"]), self._detect_rows(rows["image"]), rows["name"])]

    def gate_row(self, transcript: str, detection: tuple, name: str) -> dict:
        from hackathon.serve.gate import decide

        _, scores, labels = detection
        d = decide(transcript, scores, labels, name, self.gate_cfg)
        key = (d.reply_text, str(self.tts.export_dir))  # the same text from another TTS run is another reply
        reply = self.replies.get(key)
        if reply is None:
            reply = self.replies.put(key, np.asarray(self.tts.synthesize(d.reply_text), dtype=np.float32).reshape(-1))
        return {"transcript": np.array([d.transcript.encode("utf-8")], dtype=object),
                "phrase_ok": np.array([d.phrase_ok]), "mask": np.array([d.mask.encode("utf-8")], dtype=object),
                "admit": np.array([d.admit]), "reply_text": np.array([d.reply_text.encode("utf-8")], dtype=object),
                "reply_audio": reply, "sample_rate": np.array([self.tts_rate], dtype=np.int32)}

    def callable_for(self, model: str):
        run_rows = getattr(self, f"run_{model}")

        def infer(requests):
            return _per_request(requests, model, self.limits, run_rows)

        infer.__name__ = f"infer_{model}"
        return infer


# The stable tensor interface (docs/SERVING.md): model -> (inputs, outputs) of (name, Triton type, dims
# without the batch dimension). Used by `serve` (pytriton) and by the deployed repository's configs.
INTERFACE = {
    "asr": ([("audio", "FP32", [-1])], [("text", "BYTES", [1])]),
    "tts": ([("text", "BYTES", [1])], [("audio", "FP32", [-1]), ("sample_rate", "INT32", [1])]),
    "detect": ([("image", "UINT8", [-1])],
               [("boxes", "FP32", [-1, 4]), ("scores", "FP32", [-1]), ("labels", "BYTES", [-1])]),
    "gate": ([("audio", "FP32", [-1]), ("image", "UINT8", [-1]), ("name", "BYTES", [1])],
             [("transcript", "BYTES", [1]), ("phrase_ok", "BOOL", [1]), ("mask", "BYTES", [1]),
              ("admit", "BOOL", [1]), ("reply_text", "BYTES", [1]), ("reply_audio", "FP32", [-1]),
              ("sample_rate", "INT32", [1])]),
}
NUMPY_TYPES = {"FP32": np.float32, "UINT8": np.uint8, "INT32": np.int32, "BOOL": np.bool_, "BYTES": bytes}


def tensor_interface():
    """(inputs, outputs) pytriton Tensors per model, from INTERFACE."""
    from pytriton.model_config import Tensor

    def tensors(items):
        return [Tensor(name=n, dtype=NUMPY_TYPES[t], shape=tuple(d)) for n, t, d in items]

    return {model: (tensors(ins), tensors(outs)) for model, (ins, outs) in INTERFACE.items()}


# ---------------------------------------------------------------- the server

def load_serve_config(spec: str | None, overrides: Sequence[str] = ()):
    from hackathon.core.config import load_config

    return load_config("serve", spec, overrides)


def serve(asr: Path | None = None, tts: Path | None = None, detect: Path | None = None, spec: str | None = None,
          overrides: Sequence[str] = (), host: str | None = None, http_port: int | None = None,
          grpc_port: int | None = None, metrics_port: int | None = None, echo=print) -> None:
    """Load the predictors, start tritonserver with the four models and serve until Ctrl-C / SIGTERM."""
    from hackathon.serve import libpython, shim

    cfg = load_serve_config(spec, overrides)
    host = host or str(cfg.server.host)
    ports = {"http": int(http_port or cfg.server.http_port), "grpc": int(grpc_port or cfg.server.grpc_port),
             "metrics": int(metrics_port or cfg.server.metrics_port)}
    check_ports_free(host, ports)

    # The stub's libpython must match this interpreter (see libpython.py): tritonserver inherits os.environ.
    env, found = libpython.fixed_environment()
    if found.problem and not found.needed_dir:
        raise HackathonError(f"Triton cannot run Python models with this interpreter: {found.problem}.", fix=found.fix)
    if found.needed_dir:
        os.environ["LD_LIBRARY_PATH"] = env["LD_LIBRARY_PATH"]
        echo(f"LD_LIBRARY_PATH: {found.needed_dir} first, so Triton's Python stub loads {found.own}")

    run_dirs = resolve_run_dirs(asr, tts, detect)
    for task, run_dir in run_dirs.items():
        echo(f"{task}: {run_dir}")
    predictors = load_predictors(run_dirs)
    models = Models(predictors, cfg)

    from pytriton.model_config import DynamicBatcher, ModelConfig
    from pytriton.triton import Triton, TritonConfig

    shim.install(models.limits)
    log_file = server_log_path(ports["http"])
    config = TritonConfig(http_address=host, grpc_address=host, metrics_address=host,
                          http_port=ports["http"], grpc_port=ports["grpc"], metrics_port=ports["metrics"],
                          exit_timeout_secs=int(cfg.server.exit_timeout_s), log_verbose=0, log_file=log_file)
    echo(f"tritonserver log: {log_file}")
    interface = tensor_interface()
    stop = threading.Event()

    def on_signal(signum, _frame):
        echo(f"{signal.Signals(signum).name}: stopping Triton")
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    triton = Triton(config=config)
    try:
        for name in MODELS:
            inputs, outputs = interface[name]
            triton.bind(model_name=name, infer_func=models.callable_for(name), inputs=inputs, outputs=outputs,
                        config=ModelConfig(max_batch_size=int(cfg.server.max_batch_size),
                                           batcher=DynamicBatcher(
                                               max_queue_delay_microseconds=int(cfg.server.max_queue_delay_us),
                                               preferred_batch_size=list(cfg.server.preferred_batch_sizes) or None)),
                        strict=True)
        try:
            triton.run()
        except Exception as exc:  # pytriton raises its own types; the reason is in tritonserver's log
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise HackathonError(f"Triton did not start: {exc}\n{tail}",
                                 fix=f"See {log_file}; `hackathon doctor` checks the Triton Python stub.") from exc
        echo(f"serving {', '.join(MODELS)}: http://{host}:{ports['http']}  grpc {host}:{ports['grpc']}  "
             f"metrics http://{host}:{ports['metrics']}/metrics  (Ctrl-C stops)")
        while not stop.is_set():
            if not triton.is_alive():
                raise HackathonError("Triton stopped on its own (see the log above).",
                                     fix="Start `hackathon serve` again; if it repeats, run `hackathon doctor`.")
            stop.wait(1.0)
    finally:
        triton.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        echo("Triton stopped")


def server_log_path(http_port: int) -> Path:
    """tritonserver's own log goes to a file (the console shows our lines only): <runs>/serve/logs/."""
    from hackathon.core.paths import runs_root

    folder = runs_root() / "serve" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"tritonserver-{time.strftime('%Y%m%d-%H%M%S')}-{http_port}.log"


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Refuse early (with the fix) when a port is taken, instead of a tritonserver bind error deep in its log."""
    import socket

    for kind, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            # as servers do: TIME_WAIT leftovers of a killed server's connections do not block, a listener does
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise HackathonError(f"{kind} port {host}:{port} is in use ({exc.strerror}).",
                                     fix=f"Stop what holds it (`ss -ltnp | grep :{port}`) or pass "
                                         f"--{kind}-port N.") from None


def wait_ready(url: str, timeout_s: float = 180.0, models: Sequence[str] = MODELS) -> None:
    """Block until Triton at `url` (host:http_port) reports every model ready (used by tests, bench, page)."""
    import tritonclient.http as httpclient

    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            client = httpclient.InferenceServerClient(url)
            if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(0.5)
    raise HackathonError(f"Triton at {url} did not get ready in {timeout_s:.0f} s ({last}).",
                         fix="Look at the serve log; check the run dirs hold exported models.")
