"""`hackathon deploy triton-repo`: the Triton model repository for the NGC container.

Fast tests use small real ONNX graphs in run-dir layout (the writer only reads export/); every config.pbtxt
is parsed with Triton's own ModelConfig protobuf from tritonclient. The slow test writes the repository
from the trained session runs and checks the ASR predictor over the repository's files transcribes as the
run does. The docker path is exercised up to the pull of the NGC image (nvcr.io is unreachable here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def tiny_onnx(path: Path, inputs, outputs) -> Path:
    """A valid ONNX graph: each output = Identity/Cast of the first input (names/types/shapes as given)."""
    import onnx
    from onnx import TensorProto, helper

    types = {"f": TensorProto.FLOAT, "u8": TensorProto.UINT8, "i64": TensorProto.INT64}
    ins = [helper.make_tensor_value_info(n, types[t], dims) for n, t, dims in inputs]
    outs = [helper.make_tensor_value_info(n, types[t], dims) for n, t, dims in outputs]
    nodes = [helper.make_node("Cast", [inputs[0][0]], [n], to=types[t]) for n, t, _ in outputs]
    model = helper.make_model(helper.make_graph(nodes, "tiny", ins, outs), opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def fake_runs(tmp_path) -> dict[str, Path]:
    runs = {t: tmp_path / "runs" / t for t in ("asr", "tts", "detect")}
    tiny_onnx(runs["asr"] / "export" / "asr_model.onnx", [("audio_signal", "f", ["B", 64, "T"])],
              [("logprobs", "f", ["B", "T2", 47])])
    (runs["asr"] / "export" / "vocabulary.json").write_text(json.dumps({"vocabulary": list("abc")}))
    (runs["asr"] / "export" / "model_config.yaml").write_text("sample_rate: 16000\n")
    (runs["asr"] / "export" / "asr_model.nemo").write_bytes(b"big weights not needed at serving time")
    tiny_onnx(runs["tts"] / "export" / "fastpitch.onnx",
              [("text", "i64", ["B", "T"]), ("pitch", "f", ["B", "T"]), ("pace", "f", ["B", "T"])],
              [("spect", "f", ["B", 80, "F"])])
    (runs["tts"] / "export" / "tts_export.yaml").write_text("tokens: []\n")
    (runs["tts"] / "export" / "pinyin_dict.txt").write_text("ni3 n i3\n")
    (runs["tts"] / "config.yaml").write_text("vocoder: griffin_lim\n")
    tiny_onnx(runs["detect"] / "export" / "detector.onnx", [("image", "u8", ["H", "W", 3])],
              [("boxes", "f", ["N", 4]), ("scores", "f", ["N"]), ("labels", "i64", ["N"])])
    (runs["detect"] / "export" / "detector.json").write_text(json.dumps({"classes": ["with_mask"]}))
    return runs


def parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def write(fake_runs, out, **kwargs):
    from hackathon.serve.server import load_serve_config
    from hackathon.serve.triton_repo import write_repository

    return write_repository(out, fake_runs, load_serve_config(None), **kwargs)


def test_repository_layout_and_every_config_parses_with_tritons_protobuf(fake_runs, tmp_path):
    from tritonclient.grpc import model_config_pb2 as mc

    out = tmp_path / "repo"
    summary = write(fake_runs, out)
    assert summary["models"] == {"asr_encoder": "onnxruntime_onnx", "tts_fastpitch": "onnxruntime_onnx",
                                 "detect_ssd": "onnxruntime_onnx", "asr": "python", "tts": "python",
                                 "detect": "python", "gate": "python"}
    configs = {p.parent.name: parse_config(p) for p in out.glob("*/config.pbtxt")}
    assert set(configs) == set(summary["models"])
    for name, cfg in configs.items():
        assert cfg.name == name
        assert (out / name / "1").is_dir()
    enc = configs["asr_encoder"]
    assert enc.platform == "onnxruntime_onnx" and enc.max_batch_size == 16
    assert enc.dynamic_batching.max_queue_delay_microseconds == 5000
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in enc.input] == \
        [("audio_signal", "TYPE_FP32", [64, -1])]
    assert enc.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert [g.count for g in configs["gate"].instance_group] == [2]  # deploy.instances of the serve spec
    assert (out / "asr_encoder" / "1" / "model.onnx").is_file()
    ssd = configs["detect_ssd"]  # one image of any size, no batch axis: no dynamic batching
    assert ssd.max_batch_size == 0 and not ssd.HasField("dynamic_batching")
    assert [list(i.dims) for i in ssd.input] == [[-1, -1, 3]]
    gate = configs["gate"]
    assert gate.backend == "python" and gate.max_batch_size == 16 and gate.HasField("dynamic_batching")
    assert {o.name: mc.DataType.Name(o.data_type) for o in gate.output} == {
        "transcript": "TYPE_STRING", "phrase_ok": "TYPE_BOOL", "mask": "TYPE_STRING", "admit": "TYPE_BOOL",
        "reply_text": "TYPE_STRING", "reply_audio": "TYPE_FP32", "sample_rate": "TYPE_INT32"}
    assert {i.name: list(i.dims) for i in configs["detect"].input} == {"image": [-1]}
    # Python models: model.py imports the project's class; the run folder links the network files
    assert "hackathon.serve.triton_python_model" in (out / "asr" / "1" / "model.py").read_text()
    link = out / "asr" / "1" / "run" / "export" / "asr_model.onnx"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == (out / "asr_encoder" / "1" / "model.onnx").resolve()
    assert not (out / "asr" / "1" / "run" / "export" / "asr_model.nemo").exists()
    settings = json.loads((out / "tts" / "1" / "hackathon_model.json").read_text())
    assert settings["bls"]["fastpitch.onnx"] == {"model": "tts_fastpitch", "inputs": ["text", "pitch", "pace"],
                                                 "outputs": ["spect"], "per_row": []}
    assert json.loads((out / "gate" / "1" / "hackathon_model.json").read_text())["gate"]["pass_phrase"] == "你好大白请让我进入小区"
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in (out / "Dockerfile").read_text()
    assert any(line.startswith("nemo_toolkit==") for line in (out / "requirements.txt").read_text().splitlines())


def test_engine_present_becomes_a_tensorrt_plan(fake_runs, tmp_path):
    (fake_runs["detect"] / "export" / "detector.plan").write_bytes(b"serialized engine")
    out = tmp_path / "repo"
    summary = write(fake_runs, out)
    assert summary["models"]["detect_ssd"] == "tensorrt_plan"
    assert parse_config(out / "detect_ssd" / "config.pbtxt").platform == "tensorrt_plan"
    assert (out / "detect_ssd" / "1" / "model.plan").read_bytes() == b"serialized engine"


def test_never_writes_over_a_repository_and_names_missing_exports(fake_runs, tmp_path):
    from hackathon.core.errors import HackathonError

    out = tmp_path / "repo"
    write(fake_runs, out)
    with pytest.raises(HackathonError, match="not empty"):
        write(fake_runs, out)
    (fake_runs["detect"] / "export" / "detector.onnx").unlink()
    with pytest.raises(HackathonError, match="detector.onnx not found") as err:
        write(fake_runs, tmp_path / "repo2")
    assert "hackathon run detect" in err.value.fix


def test_docker_command_mounts_and_loopback_ports(fake_runs, tmp_path):
    from hackathon.serve.server import load_serve_config
    from hackathon.serve.triton_repo import docker_commands

    out = tmp_path / "repo"
    write(fake_runs, out)
    cmd = docker_commands(out, load_serve_config(None))
    run = cmd["run"]
    assert run[:4] == ["docker", "run", "--rm", "--gpus"] and run[4] == "all"
    assert f"{out.resolve()}:/models:ro" in run and f"{REPO}:/opt/hackathon:ro" in run
    assert "127.0.0.1:8000:8000" in run and "127.0.0.1:8001:8001" in run and "127.0.0.1:8002:8002" in run
    assert run[run.index("tritonserver"):][:2] == ["tritonserver", "--model-repository=/models"]
    assert cmd["base"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert cmd["build"][:2] == ["docker", "build"]


def cli(*args, env=None):
    exe = Path(sys.executable).parent / "hackathon"
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=full_env, timeout=300)


def test_cli_prints_the_commands_and_engines_say_why_not_here(fake_runs, tmp_path):
    runs = ["--asr", str(fake_runs["asr"]), "--tts", str(fake_runs["tts"]), "--detect", str(fake_runs["detect"])]
    ok = cli("deploy", "triton-repo", "--out", str(tmp_path / "repo"), *runs)
    assert ok.returncode == 0, ok.stderr
    assert "docker run --rm --gpus all" in ok.stdout and "nvcr.io" not in ok.stdout.split("docker run")[1].split()[0]
    assert "tritonserver --model-repository=/models" in ok.stdout
    engines = cli("deploy", "triton-repo", "--out", str(tmp_path / "repo2"), "--engines", *runs)
    if engines.returncode == 0:
        pytest.skip("this machine has a GPU and trtexec: engines were built")
    assert "TensorRT engines were not built" in engines.stderr and "GPU workstation" in engines.stderr
    assert not (tmp_path / "repo2").exists()  # nothing half-written


def test_run_goes_through_docker_up_to_the_ngc_pull_with_a_clear_offline_error(fake_runs, tmp_path):
    from tests.conftest import require_docker_engine

    require_docker_engine()
    runs = ["--asr", str(fake_runs["asr"]), "--tts", str(fake_runs["tts"]), "--detect", str(fake_runs["detect"])]
    proc = cli("deploy", "triton-repo", "--out", str(tmp_path / "repo"), "--run", *runs)
    assert proc.returncode == 1
    assert "nvcr.io/nvidia/tritonserver:24.10-py3" in proc.stderr
    assert "Cannot pull" in proc.stderr or "refused" in proc.stderr, proc.stderr
    assert "fix:" in proc.stderr
    assert (tmp_path / "repo" / "gate" / "config.pbtxt").is_file()  # the repository is written first


@pytest.mark.slow
def test_repository_from_real_runs_serves_the_same_asr_through_its_run_folder(serve_runs, tmp_path):
    """The asr Python model's run folder (config + symlinked network) is enough for the predictor."""
    from data_tools.audio import read_audio
    from hackathon.serve.server import load_serve_config
    from hackathon.serve.triton_repo import write_repository
    from tasks.asr.onnx_infer import load

    out = tmp_path / "repo"
    write_repository(out, serve_runs, load_serve_config(None))
    for p in out.glob("*/config.pbtxt"):
        parse_config(p)
    rows = [json.loads(x) for x in (serve_runs["asr"] / "predictions.jsonl").read_text().splitlines()][:4]
    clips = [read_audio(r["audio_filepath"])[0] for r in rows]
    direct = load(serve_runs["asr"], prefer_gpu=False).transcribe_batch(clips)
    via_repo = load(out / "asr" / "1" / "run", prefer_gpu=False).transcribe_batch(clips)
    assert via_repo == direct
    assert np.mean([d == r["text"] for d, r in zip(direct, rows)]) > 0
