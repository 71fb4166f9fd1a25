"""`hackathon serve`: the real tritonserver with asr, tts, detect and gate, called over HTTP AND gRPC with
tritonclient on real (small) trained runs. Bad input -> client error naming it, server keeps serving;
loopback binding; SIGTERM stops cleanly; kill -9 + restart serves the same answers.

Slow (trains three tiny runs once per session): `flock /tmp/hackathon-cpu.lock pytest tests/serve`.
"""

from __future__ import annotations

import io
import json
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import assert_no_stray, free_ports, start_server

pytestmark = pytest.mark.slow

PROTOCOLS = ("http", "grpc")
PASS_PHRASE = "你好大白请让我进入小区"


# ---------------------------------------------------------------- helpers

def client(server, protocol):
    if protocol == "http":
        import tritonclient.http as module

        return module, module.InferenceServerClient(server.http, network_timeout=300, connection_timeout=300)
    import tritonclient.grpc as module

    return module, module.InferenceServerClient(server.grpc)


def infer(server, protocol, model, inputs: dict, dtypes: dict | None = None):
    """inputs: name -> numpy array WITHOUT the batch dim (a batch of 1 is added). Returns name -> row 0."""
    module, c = client(server, protocol)
    tensors = []
    for name, value in inputs.items():
        arr = np.asarray(value)[None, ...]
        dtype = (dtypes or {}).get(name) or {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8",
                                             np.dtype(object): "BYTES"}.get(arr.dtype, "FP32")
        t = module.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        tensors.append(t)
    result = c.infer(model, tensors)
    response = result.get_response()
    names = [o["name"] for o in response["outputs"]] if protocol == "http" else [o.name for o in response.outputs]
    return {n: result.as_numpy(n)[0] for n in names}


def text_of(value) -> str:
    v = np.asarray(value).reshape(-1)[0]
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def png_bytes(img) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def mask_image(label: str, size: int = 320):
    """A demo-style image (data_tools.detection.synth_masks) with ONE face of class `label`."""
    from data_tools.detection.synth_masks import draw_image

    for seed in range(500):
        img, objects = draw_image(random.Random(seed), size, size, max_faces=1)
        if len(objects) == 1 and objects[0][0] == label:
            return img, objects
    raise AssertionError(f"no single-face {label} image in 500 seeds")


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


@pytest.fixture(scope="session")
def held_out_clip(serve_runs):
    """A test-split clip of the pass phrase that the ASR run's own evaluation transcribed correctly."""
    from data_tools.audio import read_audio

    rows = [json.loads(line) for line in (serve_runs["asr"] / "predictions.jsonl").read_text().splitlines()]
    good = [r for r in rows if r["pred_text"] == r["text"]]
    assert good, "the ASR run transcribed no test clip correctly"
    row = next((r for r in good if r["text"] == PASS_PHRASE), good[0])
    audio, sr = read_audio(row["audio_filepath"])
    assert sr == 16000
    return audio.astype(np.float32), row["text"]


# ---------------------------------------------------------------- interface

def test_four_models_with_the_documented_interface_and_dynamic_batching(triton_server):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(triton_server.http)
    expected = {
        "asr": ({"audio": ("FP32", [-1, -1])}, {"text": ("BYTES", [-1, 1])}),
        "tts": ({"text": ("BYTES", [-1, 1])}, {"audio": ("FP32", [-1, -1]), "sample_rate": ("INT32", [-1, 1])}),
        "detect": ({"image": ("UINT8", [-1, -1])},
                   {"boxes": ("FP32", [-1, -1, 4]), "scores": ("FP32", [-1, -1]), "labels": ("BYTES", [-1, -1])}),
        "gate": ({"audio": ("FP32", [-1, -1]), "image": ("UINT8", [-1, -1]), "name": ("BYTES", [-1, 1])},
                 {"transcript": ("BYTES", [-1, 1]), "phrase_ok": ("BOOL", [-1, 1]), "mask": ("BYTES", [-1, 1]),
                  "admit": ("BOOL", [-1, 1]), "reply_text": ("BYTES", [-1, 1]), "reply_audio": ("FP32", [-1, -1]),
                  "sample_rate": ("INT32", [-1, 1])}),
    }
    for model, (inputs, outputs) in expected.items():
        meta = c.get_model_metadata(model)
        got_in = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]}
        got_out = {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in meta["outputs"]}
        assert got_in == inputs, model
        assert got_out == outputs, model
        config = c.get_model_config(model)
        assert config["max_batch_size"] >= 8 and "dynamic_batching" in config, model


def test_endpoints_bind_loopback_only(triton_server):
    """Every listening socket on the three ports is 127.0.0.1 (read from /proc/net/tcp*; gRPC listens on an
    IPv6 socket at the IPv4-mapped ::ffff:127.0.0.1)."""
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            addr, port = local.split(":")
            listening.setdefault(int(port, 16), []).append(addr)
    for kind, port in triton_server.ports.items():
        assert listening.get(port), f"{kind} port {port} not listening"
        assert set(listening[port]) <= loopback, f"{kind} port {port} bound to {listening[port]}"


# ---------------------------------------------------------------- real answers over both protocols

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_asr_transcribes_the_held_out_demo_clip(triton_server, held_out_clip, protocol):
    audio, text = held_out_clip
    assert text_of(infer(triton_server, protocol, "asr", {"audio": audio})["text"]) == text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_detect_finds_the_face_with_its_class(triton_server, protocol):
    for label in ("with_mask", "without_mask"):
        img, objects = mask_image(label)
        out = infer(triton_server, protocol, "detect", {"image": png_bytes(img)})
        labels = [v.decode() for v in out["labels"] if v]
        assert labels, f"{label}: nothing detected"
        assert labels[0] == label, (label, labels, out["scores"])
        assert iou(out["boxes"][0], objects[0][1]) > 0.5, (out["boxes"][0], objects[0][1])
        assert (np.diff(out["scores"][:len(labels)]) <= 0).all()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_photo_without_faces_gets_no_boxes_not_an_error(triton_server, held_out_clip, protocol):
    """A webcam frame of a wall: found with the microphone/webcam page test, it made the server fail (500)."""
    from PIL import Image

    wall = png_bytes(Image.new("RGB", (320, 240), (120, 120, 120)))
    out = infer(triton_server, protocol, "detect", {"image": wall})
    assert [v for v in out["labels"] if v] == [] and len(out["boxes"]) == len(out["labels"]) == len(out["scores"])
    audio, _ = held_out_clip
    gate = infer(triton_server, protocol, "gate", {"audio": audio, "image": wall,
                                                   "name": np.array(["王芳".encode()], dtype=object)})
    assert text_of(gate["mask"]) == "no_face" and not bool(gate["admit"][0]), gate


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tts_speaks_at_the_stated_rate(triton_server, serve_runs, protocol):
    from omegaconf import OmegaConf

    out = infer(triton_server, protocol, "tts", {"text": np.array(["您好，张伟，欢迎回家。".encode()], dtype=object)})
    rate = int(out["sample_rate"][0])
    assert rate == int(OmegaConf.load(serve_runs["tts"] / "config.yaml").data.sample_rate)
    audio = out["audio"]
    # >= 50 ms of real frames: the fixture's FastPitch trains 16 steps, so its durations are short but not empty
    assert audio.dtype == np.float32 and len(audio) > 0.05 * rate and np.isfinite(audio).all()
    assert 0.001 < float(np.abs(audio).max()) <= 1.5


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gate_admits_with_mask_and_refuses_without(triton_server, held_out_clip, protocol):
    audio, _ = held_out_clip
    name = np.array(["王芳".encode()], dtype=object)
    masked, _ = mask_image("with_mask")
    bare, _ = mask_image("without_mask")

    ok = infer(triton_server, protocol, "gate", {"audio": audio, "image": png_bytes(masked), "name": name})
    assert text_of(ok["transcript"]) == PASS_PHRASE
    assert bool(ok["phrase_ok"][0]) and bool(ok["admit"][0]) and text_of(ok["mask"]) == "with_mask"
    assert text_of(ok["reply_text"]) == "您好，王芳，欢迎回家，二维码有效请您通过。"
    assert len(ok["reply_audio"]) > int(ok["sample_rate"][0]) * 0.05  # the tiny FastPitch speaks fast

    no = infer(triton_server, protocol, "gate", {"audio": audio, "image": png_bytes(bare), "name": name})
    assert bool(no["phrase_ok"][0]) and not bool(no["admit"][0]) and text_of(no["mask"]) == "without_mask"
    assert text_of(no["reply_text"]) == "对不起，王芳，请您戴好口罩。"
    assert len(no["reply_audio"]) > 0

    silence = np.zeros(16000, dtype=np.float32)
    wrong = infer(triton_server, protocol, "gate", {"audio": silence, "image": png_bytes(masked), "name": name})
    assert not bool(wrong["phrase_ok"][0]) and not bool(wrong["admit"][0])


# ---------------------------------------------------------------- bad input: 400 / INVALID_ARGUMENT, still serving

def _wav_file_bytes() -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, dtype=np.float32), 16000, format="WAV")
    return buf.getvalue()


def _big_png() -> np.ndarray:
    from PIL import Image

    return png_bytes(Image.new("RGB", (7100, 7100), (200, 180, 160)))  # 50.4 MP, a small file


def _bad_cases():
    wav = _wav_file_bytes()
    garbage = np.frombuffer(wav[:len(wav) // 4 * 4], dtype=np.float32).copy()  # file bytes read as FP32
    return [
        # (id, model, inputs builder, dtypes, words the error must contain)
        ("asr-audio-file-bytes-as-uint8", "asr", lambda: {"audio": np.frombuffer(wav, dtype=np.uint8)}, None,
         ["audio", "FP32"]),
        ("asr-audio-garbage-floats", "asr", lambda: {"audio": garbage}, None, ["audio"]),
        ("asr-audio-empty", "asr", lambda: {"audio": np.zeros(0, dtype=np.float32)}, None, ["audio", "empty"]),
        ("asr-audio-10-minutes", "asr", lambda: {"audio": np.zeros(16000 * 600, dtype=np.float32)}, None,
         ["audio", "cap"]),
        ("asr-audio-nan", "asr", lambda: {"audio": np.full(16000, np.nan, dtype=np.float32)}, None, ["audio", "NaN"]),
        ("tts-text-empty", "tts", lambda: {"text": np.array([b""], dtype=object)}, None, ["text", "empty"]),
        ("tts-text-not-utf8", "tts", lambda: {"text": np.array([b"\xff\xfe\xfa"], dtype=object)}, None,
         ["text", "UTF-8"]),
        ("tts-text-too-long", "tts", lambda: {"text": np.array(["好" * 500], dtype=object)}, None, ["text", "cap"]),
        ("detect-image-corrupt", "detect", lambda: {"image": np.frombuffer(b"\x89PNG\r\n\x1a\nnot really", np.uint8)},
         None, ["image", "JPEG/PNG"]),
        ("detect-image-50-megapixels", "detect", lambda: {"image": _big_png()}, None, ["image", "megapixels"]),
        ("detect-image-empty", "detect", lambda: {"image": np.zeros(0, dtype=np.uint8)}, None, ["image", "empty"]),
        ("detect-image-fp32", "detect", lambda: {"image": np.zeros(10, dtype=np.float32)}, None, ["image", "UINT8"]),
        ("gate-name-empty", "gate", lambda: _gate_inputs(name=b"   "), None, ["name", "empty"]),
        ("gate-name-not-utf8", "gate", lambda: _gate_inputs(name=b"\xc3\x28"), None, ["name", "UTF-8"]),
        ("gate-image-corrupt", "gate", lambda: _gate_inputs(image=np.frombuffer(b"\xff\xd8\xff\xe0garbage", np.uint8)),
         None, ["image"]),
        ("gate-audio-empty", "gate", lambda: _gate_inputs(audio=np.zeros(0, dtype=np.float32)), None, ["audio", "empty"]),
    ]


def _gate_inputs(audio=None, image=None, name=None):
    if image is None:
        image = png_bytes(mask_image("with_mask")[0])
    return {"audio": audio if audio is not None else np.zeros(16000, dtype=np.float32), "image": image,
            "name": np.array([name if name is not None else "王芳".encode()], dtype=object)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_is_a_client_error_naming_it_and_the_server_keeps_serving(triton_server, held_out_clip,
                                                                            protocol, case):
    from tritonclient.utils import InferenceServerException

    _, model, build, dtypes, words = case
    with pytest.raises(InferenceServerException) as err:
        infer(triton_server, protocol, model, build(), dtypes)
    status = str(err.value.status())
    assert ("400" in status) if protocol == "http" else ("INVALID_ARGUMENT" in status), (status, str(err.value))
    message = err.value.message()
    assert all(w in message for w in words), message
    assert "Traceback" not in message
    audio, text = held_out_clip
    assert text_of(infer(triton_server, protocol, "asr", {"audio": audio})["text"]) == text


def test_a_bad_request_does_not_fail_the_good_ones_batched_with_it(triton_server, held_out_clip):
    """Concurrent good and bad requests land in the same dynamic batches: only the bad ones fail."""
    import tritonclient.http as httpclient

    audio, text = held_out_clip
    c = httpclient.InferenceServerClient(triton_server.http, concurrency=16)
    pending = []
    for i in range(16):
        arr = (audio if i % 2 == 0 else np.zeros(0, dtype=np.float32))[None, :]
        t = httpclient.InferInput("audio", list(arr.shape), "FP32")
        t.set_data_from_numpy(arr)
        pending.append((i, c.async_infer("asr", [t])))
    for i, p in pending:
        if i % 2 == 0:
            assert text_of(p.get_result().as_numpy("text")[0]) == text
        else:
            with pytest.raises(Exception, match="empty"):
                p.get_result()


# ---------------------------------------------------------------- kill -9 under load, restart, SIGTERM

def test_kill_9_under_load_then_restart_serves_the_same_answers_and_sigterm_stops_cleanly(serve_runs, held_out_clip,
                                                                                         tmp_path):
    audio, text = held_out_clip
    ports = dict(zip(("http", "grpc", "metrics"), free_ports(3)))
    first = start_server(serve_runs, tmp_path / "first.log", ports)
    before = {p: infer(first, p, "asr", {"audio": audio})["text"] for p in PROTOCOLS}
    img = png_bytes(mask_image("with_mask")[0])
    det_before = infer(first, "http", "detect", {"image": img})

    stop, errors = threading.Event(), []

    def load():
        while not stop.is_set():
            try:
                infer(first, "http", "asr", {"audio": audio})
            except Exception as exc:  # noqa: BLE001 - expected once the server is killed
                errors.append(exc)
                time.sleep(0.05)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert_no_stray(first, timeout=30)  # tritonserver dies with its parent (PR_SET_PDEATHSIG)

    second = start_server(serve_runs, tmp_path / "second.log", ports)  # same ports: nothing left holding them
    try:
        after = {p: infer(second, p, "asr", {"audio": audio})["text"] for p in PROTOCOLS}
        assert {p: text_of(v) for p, v in after.items()} == {p: text_of(v) for p, v in before.items()} \
            == {p: text for p in PROTOCOLS}
        det_after = infer(second, "http", "detect", {"image": img})
        assert [v for v in det_after["labels"]] == [v for v in det_before["labels"]]
        np.testing.assert_allclose(det_after["boxes"], det_before["boxes"], atol=1e-3)
    finally:
        t0 = time.monotonic()
        code = second.stop(signal.SIGTERM, timeout=90)
    assert code == 0, second.log_tail()
    assert time.monotonic() - t0 < 60
    assert_no_stray(second)
    assert "stopping Triton" in second.log_tail()
