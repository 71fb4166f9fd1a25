"""Serving pieces without trained models: input checks, the gate decision, the libpython diagnosis, and the
stub shim on the REAL tritonserver with a tiny pytriton model (no training; ~15 s)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hackathon.core.text import cer, spoken_chars
from hackathon.serve.gate import decide, top_face_class
from hackathon.serve.inputs import BadInput, decode_request

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cfg():
    from omegaconf import OmegaConf

    from hackathon.serve.server import load_serve_config

    return OmegaConf.to_container(load_serve_config(None), resolve=True)


def png(size=(64, 48)) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def test_good_requests_decode(cfg):
    out = decode_request("gate", {"audio": np.zeros((1, 16000), np.float32), "image": png()[None, :],
                                  "name": np.array([["王芳".encode()]], dtype=object)}, cfg["limits"])
    assert out["name"] == ["王芳"] and out["image"][0].size == (64, 48) and out["audio"][0].shape == (16000,)


@pytest.mark.parametrize("model,inputs,words", [
    ("asr", {"audio": np.zeros((1, 0), np.float32)}, ["'audio'", "empty"]),
    ("asr", {"audio": np.zeros((1, 16000 * 31), np.float32)}, ["31.0 s", "audio_max_seconds"]),
    ("asr", {"audio": np.full((1, 16000), 300.0, np.float32)}, ["[-1, 1]"]),
    ("asr", {"audio": np.zeros((1, 16000), np.float64)}, ["float64", "FP32"]),
    ("asr", {}, ["missing", "audio"]),
    ("tts", {"text": np.array([[b"\xff"]], dtype=object)}, ["UTF-8"]),
    ("tts", {"text": np.array([[b" \n "]], dtype=object)}, ["empty"]),
    ("tts", {"text": np.array([[b"a\x00b"]], dtype=object)}, ["control"]),
    ("detect", {"image": np.frombuffer(b"GIF89a-not-really", np.uint8)[None, :]}, ["not a readable"]),
    ("detect", {"image": png()[None, :-40]}, ["'image'"]),  # truncated PNG
    ("detect", {"image": png((5000, 4000))[None, :]}, ["20.0 megapixels", "image_max_pixels"]),
    ("gate", {"audio": np.zeros((1, 16000), np.float32), "image": png()[None, :],
              "name": np.array([["x" * 40]], dtype=object)}, ["'name'", "40 characters"]),
])
def test_bad_requests_name_the_input(cfg, model, inputs, words):
    with pytest.raises(BadInput) as err:
        decode_request(model, inputs, cfg["limits"])
    assert all(w in str(err.value) for w in words), str(err.value)


def test_cer_and_top_face():
    assert cer("你好大白请让我进入小区", spoken_chars("你好，大白请让我进入小区。")) == 0
    assert cer("你好大白请让我进入小区", "你好大白") == pytest.approx(7 / 11)
    assert top_face_class([0.2, 0.9, 0.5], ["with_mask", "without_mask", "with_mask"], 0.3) == "without_mask"
    assert top_face_class([0.2], ["with_mask"], 0.3) == "no_face"
    assert top_face_class([], [], 0.3) == "no_face"


def test_gate_decisions_come_from_the_spec(cfg):
    gate = cfg["gate"]
    ok = decide("你好大白请让我进入小区", [0.8], ["with_mask"], "王芳", gate)
    assert ok.admit and ok.reply_text == gate["greeting"].format(name="王芳") and ok.reason == "admitted"
    near = decide("你好大白请让我进入小", [0.8], ["with_mask"], "王芳", gate)  # 1 of 11 wrong: within 0.25
    assert near.phrase_ok and near.admit
    bare = decide("你好大白请让我进入小区", [0.8, 0.5], ["without_mask", "with_mask"], "王芳", gate)
    assert not bare.admit and bare.mask == "without_mask"
    assert bare.reply_text == gate["refusals"]["without_mask"].format(name="王芳")
    wrong = decide("我来送快递", [0.8], ["with_mask"], "王芳", gate)
    assert not wrong.phrase_ok and not wrong.admit and wrong.reason == "wrong_phrase"
    empty = decide("你好大白请让我进入小区", [], [], "王芳", gate)
    assert empty.mask == "no_face" and empty.reply_text == gate["refusals"]["no_face"].format(name="王芳")
    changed = dict(gate, max_cer=0.0)
    assert not decide("你好大白请让我进入小", [0.8], ["with_mask"], "王芳", changed).admit


def test_libpython_diagnosis_and_doctor_check():
    from hackathon.doctor import check_triton_libpython
    from hackathon.serve.libpython import diagnose, fixed_environment

    env, found = fixed_environment()
    after = diagnose(env)
    assert after.problem == "" and after.needed_dir is None  # the fixed environment needs nothing more
    check = check_triton_libpython()
    if found.needed_dir:  # this machine: pyenv Python vs Debian's libpython
        assert check.status == "warn" and found.needed_dir in check.fix and "_recursion_count" in check.detail
        assert env["LD_LIBRARY_PATH"].split(":")[0] == found.needed_dir
    else:
        assert check.status == "ok"


TINY_SERVER = textwrap.dedent('''
    import sys, numpy as np
    from pytriton.triton import Triton, TritonConfig
    from pytriton.model_config import ModelConfig, Tensor, DynamicBatcher
    from omegaconf import OmegaConf
    from hackathon.serve import shim
    from hackathon.serve.server import load_serve_config, _per_request
    if sys.argv[1] == "shim":
        limits = OmegaConf.to_container(load_serve_config(None).limits)
        shim.install(limits)
    else:
        limits = OmegaConf.to_container(load_serve_config(None).limits)
    def rows(r):
        return [{"audio": np.full(len(t), 0.5, np.float32), "sample_rate": np.array([22050], np.int32)} for t in r["text"]]
    def infer(requests):
        return _per_request(requests, "tts", limits, rows)
    port, grpc_port, metrics_port = (int(a) for a in sys.argv[2:5])
    config = TritonConfig(http_address="127.0.0.1", grpc_address="127.0.0.1", metrics_address="127.0.0.1",
                          http_port=port, grpc_port=grpc_port, metrics_port=metrics_port, exit_timeout_secs=3)
    import tritonclient.http as h
    with Triton(config=config) as t:
        t.bind("tts", infer, inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
               outputs=[Tensor(name="audio", dtype=np.float32, shape=(-1,)),
                        Tensor(name="sample_rate", dtype=np.int32, shape=(1,))],
               config=ModelConfig(max_batch_size=8, batcher=DynamicBatcher(max_queue_delay_microseconds=200000)))
        t.run()
        c = h.InferenceServerClient(f"127.0.0.1:{port}", concurrency=4)
        pending = []
        for v in (b"abc", b"", b"abcdef"):
            i = h.InferInput("text", [1, 1], "BYTES"); i.set_data_from_numpy(np.array([[v]], dtype=object))
            pending.append(c.async_infer("tts", [i]))
        for p in pending:
            try:
                print("RESULT ok", p.get_result().as_numpy("audio").shape[1])
            except Exception as e:
                print("RESULT error", e.status(), e.message())
''')


def _run_tiny(mode: str, env: dict, tmp_path: Path) -> str:
    from tests.serve.conftest import PortTaken, on_free_ports, port_taken

    script = tmp_path / "tiny_server.py"
    script.write_text(TINY_SERVER)
    env = dict(env, PYTHONPATH=str(REPO))

    def run(ports: list[int]) -> str:
        proc = subprocess.run([sys.executable, str(script), mode, *map(str, ports)], env=env, capture_output=True,
                              text=True, timeout=240)
        out = proc.stdout + proc.stderr
        if port_taken(out):
            raise PortTaken(out[-3000:])
        return out

    return on_free_ports(run)


def test_real_triton_shim_gives_400_per_request_and_keeps_the_batch(tmp_path):
    from hackathon.serve.libpython import fixed_environment

    env, _ = fixed_environment()
    out = _run_tiny("shim", env, tmp_path)
    results = [line for line in out.splitlines() if line.startswith("RESULT")]
    assert results == ["RESULT ok 3", "RESULT error 400 tts: input 'text' is empty; send a non-empty UTF-8 string",
                       "RESULT ok 6"], out[-3000:]


def test_without_the_libpython_fix_models_fail_to_load(tmp_path):
    """The measured problem, kept honest: only meaningful where the interpreter is not the system build."""
    from hackathon.serve.libpython import diagnose

    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    if not diagnose(env).needed_dir:
        pytest.skip("this interpreter's libpython is the one the stub loads: nothing to show")
    out = _run_tiny("plain", env, tmp_path)
    assert "_recursion_count" in out and "RESULT ok" not in out, out[-3000:]


def test_reply_cache_is_bounded_and_drops_the_least_recently_used():
    from hackathon.serve.gate import ReplyCache

    cache = ReplyCache(2)
    a = cache.put(("您好", "run1"), np.ones(3, dtype=np.float32))
    cache.put(("您好", "run2"), np.zeros(3, dtype=np.float32))  # same text, another TTS model: another reply
    assert cache.get(("您好", "run1")) is a  # now the most recent
    cache.put(("再见", "run1"), np.ones(1, dtype=np.float32))
    assert cache.get(("您好", "run2")) is None and cache.get(("您好", "run1")) is a
    off = ReplyCache(0)
    off.put(("您好", "run1"), a)
    assert off.get(("您好", "run1")) is None
