"""The repository `hackathon deploy triton-repo` writes, on the REAL tritonserver 2.51 that pytriton bundles
(shared by tests/serve/test_triton_deployed.py and bench/serve_load.py --deployed).

That binary ships the Python backend only, not onnxruntime_onnx. So, in tests and benches ONLY, each ONNX
network model (asr_encoder, tts_fastpitch, tts_hifigan, detect_ssd) gets a Python-backend model.py that runs
the same model.onnx with onnxruntime (ORT_MODEL_PY), and every instance group becomes KIND_CPU (no GPU here).
The pre/post Python models (asr, tts, detect) and the BLS gate are the deployed files as written.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hackathon.serve.triton_repo import NETWORKS

REPO = Path(__file__).resolve().parents[2]

ORT_MODEL_PY = '''# Test-only stand-in for Triton's onnxruntime backend (tests/serve/triton_deployed.py): the same model.onnx.
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = {threads}
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.inputs = {{i.name: len(i.shape) for i in self.session.get_inputs()}}  # name -> rank
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        responses = []
        for request in requests:  # the pre/post models send a whole batch as one request: one ORT call each
            feed = {{n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}}
            # a [B] input is [B, 1] on Triton's side (config reshape: []), whether or not the core reshaped it
            feed = {{n: v.reshape(-1) if self.inputs[n] == 1 else v for n, v in feed.items()}}
            wanted = set(request.requested_output_names()) or set(self.outputs)
            values = self.session.run(None, feed)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, np.ascontiguousarray(v))
                                                         for n, v in zip(self.outputs, values) if n in wanted]))
        return responses
'''


def prepare_for_bundled_server(repo: Path, ort_threads: int = 1) -> list[str]:
    """Rewrite `repo` in place for the bundled binary (see the module docstring); returns the network models."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    replaced = []
    for config_path in sorted(repo.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
        if config.name in NETWORKS:
            config.platform, config.backend = "", "python"
            (config_path.parent / "1" / "model.py").write_text(ORT_MODEL_PY.format(threads=int(ort_threads)))
            replaced.append(config.name)
        for group in config.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
        config_path.write_text(text_format.MessageToString(config))
    return replaced


def backends_dir(dest: Path) -> Path:
    """The bundled backends/ with the Python stub of this interpreter's version, as pytriton prepares them."""
    from pytriton.utils.distribution import get_root_module_path, get_stub_path

    backends = dest / "backends"
    if not backends.exists():
        shutil.copytree(get_root_module_path() / "tritonserver" / "backends", backends)
        shutil.copy(get_stub_path(f"{sys.version_info[0]}.{sys.version_info[1]}"),
                    backends / "python" / "triton_python_backend_stub")
    return backends


def server_env() -> dict:
    from pytriton.utils.distribution import get_libs_path

    from hackathon.serve import libpython

    env, _ = libpython.fixed_environment()  # the stub's libpython = this interpreter's (pyenv: prefix/lib first)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (env.get("LD_LIBRARY_PATH"), str(get_libs_path())) if p)
    # the stub's embedded Python finds `python` on PATH: this venv's, so its site-packages and the project
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["PYTHONPATH"] = str(REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class DeployedServer:
    proc: subprocess.Popen
    http: str
    grpc: str
    log: Path

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (Triton unloads the models, its stubs exit), SIGKILL to the group only if it hangs."""
        import gc

        gc.collect()  # closes this process's idle client connections: Triton waits exit-timeout for open ones
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # stubs left behind, if any (their own session)
            except ProcessLookupError:
                pass


def _die_with_parent():
    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: a killed test leaves no server


def start_deployed(repo: Path, work: Path, ports: list[int], ready_s: float = 300) -> DeployedServer:
    """tritonserver (bundled binary) on `repo`, loopback only; returns once every model is ready."""
    import tritonclient.http as httpclient
    from pytriton.utils.distribution import get_root_module_path

    binary = get_root_module_path() / "tritonserver" / "bin" / "tritonserver"
    http, grpc = ports[:2]
    cmd = [str(binary), f"--model-repository={repo}", f"--backend-directory={backends_dir(work)}",
           "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
           "--allow-metrics=false", "--exit-timeout-secs=10", "--log-verbose=0"]
    log = work / f"tritonserver-{http}.log"
    proc = subprocess.Popen(cmd, env=server_env(), stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=_die_with_parent)
    server = DeployedServer(proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", log)
    models = [p.parent.name for p in repo.glob("*/config.pbtxt")]
    deadline = time.monotonic() + ready_s
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"tritonserver exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                c = httpclient.InferenceServerClient(server.http)
                if c.is_server_ready() and all(c.is_model_ready(m) for m in models):
                    return server
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"tritonserver not ready in {ready_s:.0f} s:\n{server.log_tail()}")
            time.sleep(0.5)
    except BaseException:
        server.stop(timeout=30)
        raise
