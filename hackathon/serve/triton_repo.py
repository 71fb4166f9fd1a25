"""`hackathon deploy triton-repo`: a standard Triton model repository for the NGC Triton container.

Layout (one folder per model, config.pbtxt beside numbered version folders):

  asr_encoder/   onnxruntime_onnx (or tensorrt_plan when an engine was built)  the CTC network, KIND_GPU
  tts_fastpitch/ onnxruntime_onnx / tensorrt_plan                               FastPitch, KIND_GPU
  tts_hifigan/   onnxruntime_onnx / tensorrt_plan (when the run trained one)    HiFiGAN, KIND_GPU
  detect_ssd/    onnxruntime_onnx / tensorrt_plan                               SSD with its own pre/post-proc
  asr, tts, detect   Python backend: the stable tensor interface of docs/SERVING.md. Pre/post-processing
                 (NeMo log-mel features + greedy CTC; G2P/tokens + vocoder; image decoding + labels) is the
                 project's own predictor code (tasks/<task>/onnx_infer.py), whose ONNX Runtime sessions are
                 replaced by BLS calls to the network models above (hackathon/serve/triton_python_model.py).
  gate           Python backend: BLS to asr, detect and tts, decision from hackathon/serve/gate.py.

Why Python models rather than ensembles: the steps between the networks are ragged (variable-length audio,
any image size, text -> tokens) and already written once in the predictors; an ensemble would need those
steps re-written as more models. Every network still runs on Triton's ONNX Runtime / TensorRT backend on
the GPU with dynamic batching where its batch axis is dynamic.

The Python models import the project (mounted read-only at /opt/hackathon) and need its packages, which
the stock tritonserver image lacks: the repository carries a Dockerfile that adds them; the printed
commands build it and run it. config.pbtxt files are written from Triton's own ModelConfig protobuf
(tritonclient.grpc.model_config_pb2), so they parse by construction.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from hackathon.core.errors import HackathonError
from hackathon.core.paths import REPO_ROOT

CONTAINER_REPO = "/models"
CONTAINER_CODE = "/opt/hackathon"
IMAGE_TAG = "hackathon-triton"
ONNX_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
              9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64"}

# network model name -> (task, file name in <run>/export/)
NETWORKS = {
    "asr_encoder": ("asr", "asr_model.onnx"),
    "tts_fastpitch": ("tts", "fastpitch.onnx"),
    "tts_hifigan": ("tts", "hifigan.onnx"),
    "detect_ssd": ("detect", "detector.onnx"),
}
# Packages the Python models import, pinned to what produced and checked the export on this machine.
PYTHON_MODEL_PACKAGES = ("nemo_toolkit", "torch", "numpy", "pillow", "omegaconf", "hydra-core", "soundfile",
                         "soxr", "pypinyin", "jieba", "cn2an", "editdistance")


@dataclass
class TensorSig:
    name: str
    data_type: str
    dims: list[int]  # -1 = dynamic
    first_axis: str = ""  # the symbolic name of a dynamic first axis ("" when fixed or unnamed)


def onnx_signature(path: Path) -> tuple[list[TensorSig], list[TensorSig]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def sig(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            if t.elem_type not in ONNX_TYPES:
                raise HackathonError(f"{path}: tensor {v.name} has ONNX type {t.elem_type}, which Triton's config "
                                     f"cannot describe here.", fix="Export with float/int tensors.")
            dims = list(t.shape.dim)
            out.append(TensorSig(v.name, ONNX_TYPES[t.elem_type],
                                 [d.dim_value if d.HasField("dim_value") else -1 for d in dims],
                                 dims[0].dim_param if dims and dims[0].HasField("dim_param") else ""))
        return out

    initializers = {i.name for i in model.graph.initializer}
    return sig([i for i in model.graph.input if i.name not in initializers]), sig(model.graph.output)


def _batchable(inputs: list[TensorSig], outputs: list[TensorSig]) -> bool:
    """Batchable when every input and output starts with the SAME named dynamic axis (the exporter's batch
    axis); an image [H, W, 3] in and boxes [N, 4] out are dynamic but not a batch."""
    names = {t.first_axis for t in inputs + outputs}
    return len(names) == 1 and "" not in names


def network_config(name: str, inputs, outputs, platform: str, max_batch_size: int, queue_delay_us: int,
                   instances: int = 1):
    from tritonclient.grpc import model_config_pb2 as mc

    batch = max_batch_size if _batchable(inputs, outputs) else 0
    config = mc.ModelConfig(name=name, platform=platform, max_batch_size=batch)
    for tensors, field in ((inputs, config.input), (outputs, config.output)):
        for t in tensors:
            dims = t.dims[1:] if batch else t.dims
            tensor = field.add(name=t.name, data_type=mc.DataType.Value(t.data_type), dims=dims or [1])
            if batch and not dims:  # one value per row ([B], e.g. ASR `length`): clients send [B, 1]
                tensor.reshape.SetInParent()
    if batch:
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=instances)
    return config


def python_config(name: str, max_batch_size: int, queue_delay_us: int, instances: int = 1, preferred=()):
    """The stable interface (hackathon/serve/server.py tensor_interface) as a Python-backend config."""
    from tritonclient.grpc import model_config_pb2 as mc

    from hackathon.serve.server import INTERFACE

    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    inputs, outputs = INTERFACE[name]
    for tensors, field in ((inputs, config.input), (outputs, config.output)):
        for tname, dtype, dims in tensors:
            tensor = field.add(name=tname, dims=list(dims),
                               data_type=mc.DataType.Value("TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}"))
            if field is config.input and -1 in dims:
                # clips and images of different sizes join one batch (Triton only batches equal shapes otherwise);
                # the Python model reads each request on its own and pads (measured: 8 clips = 8 calls without)
                tensor.allow_ragged_batch = True
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    # Pre/post-processing is CPU work; the networks it calls run on the GPU instances above.
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=instances)
    return config


def write_config(folder: Path, config) -> Path:
    from google.protobuf import text_format

    from hackathon.core.atomic import atomic_write_text

    return atomic_write_text(folder / "config.pbtxt", text_format.MessageToString(config))


def _package_pins() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in PYTHON_MODEL_PACKAGES:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


def _engine_for(run_dir: Path, onnx_name: str) -> Path | None:
    """A TensorRT plan built for this network (by --engines, or the TAO backend's engine stage)."""
    stem = Path(onnx_name).stem
    for candidate in (run_dir / "export" / f"{stem}.plan", run_dir / "export" / f"{stem}.engine"):
        if candidate.is_file():
            return candidate
    return None


def build_engines(run_dirs: dict[str, Path], echo=print) -> None:
    """trtexec --onnx=... --saveEngine=<stem>.plan for every exported network (GPU only)."""
    import subprocess

    trtexec = shutil.which("trtexec")
    has_gpu = bool(shutil.which("nvidia-smi")) and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    if not has_gpu or not trtexec:
        missing = "no NVIDIA GPU (nvidia-smi)" if not has_gpu else "trtexec is not installed"
        raise HackathonError(f"TensorRT engines were not built: {missing} on this machine. Engines are specific to "
                             f"the GPU and TensorRT version they are built with.",
                             fix="Run `hackathon deploy triton-repo --engines ...` on the GPU workstation (inside the "
                                 "NGC TensorRT/Triton container trtexec is /usr/src/tensorrt/bin/trtexec), or deploy "
                                 "without --engines: the ONNX models run on Triton's ONNX Runtime backend.")
    for model, (task, onnx_name) in NETWORKS.items():
        onnx_path = run_dirs[task] / "export" / onnx_name
        if not onnx_path.is_file():
            continue
        plan = onnx_path.with_suffix(".plan")
        echo(f"{model}: trtexec -> {plan}")
        proc = subprocess.run([trtexec, f"--onnx={onnx_path}", f"--saveEngine={plan}", "--fp16"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HackathonError(f"trtexec failed for {onnx_path}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}",
                                 fix="Check the TensorRT version supports every op of the model (trtexec --verbose).")


def _link_run(run_dir: Path, dest: Path, network_paths: dict[str, Path]) -> None:
    """A run-dir-like folder for the predictor: config.yaml + export/ files; ONNX files become relative
    symlinks to the network models' files, so nothing big is stored twice."""
    dest.mkdir(parents=True)
    if (run_dir / "config.yaml").is_file():
        shutil.copy2(run_dir / "config.yaml", dest / "config.yaml")
    export = dest / "export"
    export.mkdir()
    for item in sorted((run_dir / "export").iterdir()):
        if item.name in network_paths:
            os.symlink(os.path.relpath(network_paths[item.name], export), export / item.name)
        elif item.suffix in (".onnx", ".nemo", ".plan", ".engine") or item.is_dir():
            continue  # other weights are not needed at serving time
        else:
            shutil.copy2(item, export / item.name)


PYTHON_MODEL_PY = '''# Written by `hackathon deploy triton-repo`: the model code is the project's (mounted at {code}).
from hackathon.serve.triton_python_model import TritonPythonModel  # noqa: F401
'''

DOCKERFILE = '''# The NGC Triton image plus the packages the Python models (pre/post-processing, gate) import.
FROM {base}
COPY requirements.txt /tmp/hackathon-requirements.txt
RUN pip install --no-cache-dir -r /tmp/hackathon-requirements.txt
'''


def write_repository(out: Path, run_dirs: dict[str, Path], cfg) -> dict:
    """Write the repository into `out` (new or empty). Returns a summary (models, platforms, files)."""
    import tempfile

    final = Path(out)
    if final.exists() and any(final.iterdir()):
        raise HackathonError(f"--out {final} is not empty (a model repository is never written over).",
                             fix="Pass a new folder, or remove the old repository first.")
    final.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed at the end: an error never leaves half a repository.
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        summary = _write_into(out, run_dirs, cfg)
        if final.exists():
            final.rmdir()
        os.replace(out, final)
    finally:
        if out.exists():
            shutil.rmtree(out)
    os.chmod(final, 0o755)
    return summary


def _write_into(out: Path, run_dirs: dict[str, Path], cfg) -> dict:
    from omegaconf import OmegaConf

    max_batch, delay = int(cfg.server.max_batch_size), int(cfg.server.max_queue_delay_us)
    instances = {m: int(n) for m, n in cfg.deploy.instances.items()}
    summary = {"models": {}}
    network_files: dict[str, dict[str, Path]] = {"asr": {}, "tts": {}, "detect": {}}
    bls: dict[str, dict] = {"asr": {}, "tts": {}, "detect": {}}
    for model, (task, onnx_name) in NETWORKS.items():
        onnx_path = run_dirs[task] / "export" / onnx_name
        if not onnx_path.is_file():
            if model == "tts_hifigan":
                continue  # Griffin-Lim runs: no neural vocoder to serve
            raise HackathonError(f"{onnx_path} not found: the {task} run {run_dirs[task]} has no ONNX export.",
                                 fix=f"Run `hackathon run {task}` to its export stage on that run dir.")
        inputs, outputs = onnx_signature(onnx_path)
        engine = _engine_for(run_dirs[task], onnx_name)
        platform, filename, source = (("tensorrt_plan", "model.plan", engine) if engine
                                      else ("onnxruntime_onnx", "model.onnx", onnx_path))
        version_dir = out / model / "1"
        version_dir.mkdir(parents=True)
        shutil.copy2(source, version_dir / filename)
        write_config(out / model, network_config(model, inputs, outputs, platform, max_batch, delay,
                                                     instances[model]))
        network_files[task][onnx_name] = version_dir / filename
        bls[task][onnx_name] = {"model": model, "inputs": [t.name for t in inputs], "outputs": [t.name for t in outputs],
                                "per_row": [t.name for t in inputs + outputs if len(t.dims) == 1 and _batchable(inputs, outputs)]}
        summary["models"][model] = platform
    limits = OmegaConf.to_container(cfg.limits, resolve=True)
    gate = OmegaConf.to_container(cfg.gate, resolve=True)
    for model in ("asr", "tts", "detect", "gate"):
        version_dir = out / model / "1"
        version_dir.mkdir(parents=True)
        settings = {"model": model, "limits": limits}
        if model == "gate":
            settings.update(gate=gate, concurrent_bls=bool(cfg.deploy.concurrent_bls))
        else:
            _link_run(run_dirs[model], version_dir / "run", network_files[model])
            settings["bls"] = bls[model]
        (version_dir / "model.py").write_text(PYTHON_MODEL_PY.format(code=CONTAINER_CODE))
        (version_dir / "hackathon_model.json").write_text(json.dumps(settings, ensure_ascii=False, indent=2) + "\n")
        write_config(out / model, python_config(model, max_batch, delay, instances[model],
                                                preferred=list(cfg.server.preferred_batch_sizes)))
        summary["models"][model] = "python"
    (out / "requirements.txt").write_text("\n".join(_package_pins()) + "\n")
    image = str(cfg.deploy.image)
    (out / "Dockerfile").write_text(DOCKERFILE.format(base=image))
    summary["image"] = image
    return summary


def docker_commands(out: Path, cfg, image: str | None = None) -> dict:
    """The docker build + run commands (argv lists and the printed form) for the repository at `out`."""
    base = image or str(cfg.deploy.image)
    tag = f"{IMAGE_TAG}:{base.rsplit(':', 1)[-1]}"
    host = str(cfg.server.host)
    out = Path(out).resolve()
    build = ["docker", "build", "-t", tag, "-f", str(out / "Dockerfile"), str(out)]
    ports = []
    for container_port, key in ((8000, "http_port"), (8001, "grpc_port"), (8002, "metrics_port")):
        ports += ["-p", f"{host}:{int(cfg.server[key])}:{container_port}"]
    run = ["docker", "run", "--rm", "--gpus", "all", "--shm-size=1g", *ports,
           "-v", f"{out}:{CONTAINER_REPO}:ro", "-v", f"{REPO_ROOT}:{CONTAINER_CODE}:ro",
           "-e", f"PYTHONPATH={CONTAINER_CODE}", tag,
           "tritonserver", f"--model-repository={CONTAINER_REPO}", f"--exit-timeout-secs={int(cfg.server.exit_timeout_s)}"]
    return {"base": base, "tag": tag, "build": build, "run": run,
            "text": [shlex.join(build), shlex.join(run)]}


def run_container(commands: dict, echo=print) -> None:
    """Pull the NGC base (credentials from `hackathon ngc login`), build the image, start the server."""
    import subprocess

    from hackathon.core.docker import client, ensure_image

    c = client()
    ensure_image(c, commands["base"], echo=echo)  # offline / no login -> HackathonError with the fix
    for argv in (commands["build"], commands["run"]):
        echo("$ " + shlex.join(argv))
        proc = subprocess.run(argv)
        if proc.returncode != 0:
            raise HackathonError(f"`{shlex.join(argv[:3])} ...` exited with {proc.returncode}.",
                                 fix="See docker's output above; `hackathon doctor` checks the engine and GPU runtime.")


def deploy_command(out: Path, asr: Path | None = None, tts: Path | None = None, detect: Path | None = None,
                   spec: str | None = None, engines: bool = False, run: bool = False,
                   image: str | None = None, echo=print) -> list[str]:
    from hackathon.serve.server import load_serve_config, resolve_run_dirs

    cfg = load_serve_config(spec)
    run_dirs = resolve_run_dirs(asr, tts, detect)
    lines = []
    if engines:
        build_engines(run_dirs, echo=echo)
    summary = write_repository(out, run_dirs, cfg)
    lines.append(f"model repository -> {Path(out).resolve()}")
    lines += [f"  {m}: {p}" for m, p in summary["models"].items()]
    if not engines:
        lines.append("  TensorRT plans: none (ONNX Runtime backend); `--engines` builds them on a GPU machine")
    commands = docker_commands(out, cfg, image)
    lines.append("start it on the GPU workstation with:")
    lines += [f"  {t}" for t in commands["text"]]
    if run:
        for line in lines:
            echo(line)
        run_container(commands, echo=echo)
        return []
    return lines
