"""The repository `hackathon deploy triton-repo` writes, loaded by a REAL tritonserver (the 2.51 binary pytriton
bundles, started here with --backend-directory at its backends/), answers as `hackathon serve` does.

The bundled binary has the Python backend but not the onnxruntime one: in this test ONLY, the four ONNX
network models are served by a Python-backend model that runs the same model.onnx with onnxruntime
(tests/serve/triton_deployed.py), on CPU instances. The pre/post Python models (asr, tts, detect) and the BLS
gate are the deployed files. The same requests go to `hackathon serve` (the session's triton_server) and to
the deployed repository; transcripts, boxes, audio and gate decisions must agree.

Slow (shares tests/serve/conftest.py's trained runs): `flock /tmp/cpu.lock pytest tests/serve/test_triton_deployed.py`.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tests.serve.conftest import alive, children, free_ports, process_name
from tests.serve.test_serve import PASS_PHRASE, infer, mask_image, png_bytes, text_of
from tests.serve.triton_deployed import prepare_for_bundled_server, start_deployed

pytestmark = pytest.mark.slow

# A queue delay long enough that 8 concurrent requests from this test land in one dynamic batch.
BATCH_DELAY_US = 400000


@pytest.fixture(scope="module")
def deployed(serve_runs, tmp_path_factory):
    from hackathon.serve.server import load_serve_config
    from hackathon.serve.triton_repo import write_repository

    work = tmp_path_factory.mktemp("deployed")
    repo = work / "repo"
    cfg = load_serve_config(None, [f"server.max_queue_delay_us={BATCH_DELAY_US}"])
    summary = write_repository(repo, serve_runs, cfg)
    replaced = prepare_for_bundled_server(repo)
    assert set(replaced) == {m for m, p in summary["models"].items() if p == "onnxruntime_onnx"}
    server = start_deployed(repo, work, free_ports(2))
    stubs = [p for p in children(server.proc.pid) if process_name(p).startswith("triton_python")]
    server.repo, server.stub_pids = repo, stubs
    yield server
    code = server.stop()
    assert code == 0, server.log_tail()
    assert not [p for p in [server.proc.pid, *stubs] if alive(p)], "tritonserver or a stub outlived SIGTERM"


def stats(server, model: str, at_least: int = 0) -> tuple[int, int]:
    """(execution_count, inference_count) of `model`: Triton's own counters of calls and of requests' rows.
    Triton updates them after the responses go out: wait (10 s at most) until `at_least` rows are counted."""
    import time

    import tritonclient.http as httpclient

    deadline = time.monotonic() + 10
    while True:
        s = httpclient.InferenceServerClient(server.http).get_inference_statistics(model)["model_stats"][0]
        if int(s["inference_count"]) >= at_least or time.monotonic() > deadline:
            return int(s["execution_count"]), int(s["inference_count"])
        time.sleep(0.2)


@pytest.fixture(scope="module")
def clips(serve_runs):
    """Held-out clips the ASR run transcribed right, the pass phrase first."""
    from data_tools.audio import read_audio

    rows = [json.loads(x) for x in (serve_runs["asr"] / "predictions.jsonl").read_text().splitlines()]
    good = sorted((r for r in rows if r["pred_text"] == r["text"]), key=lambda r: r["text"] != PASS_PHRASE)[:8]
    assert good and good[0]["text"] == PASS_PHRASE
    return [(read_audio(r["audio_filepath"])[0].astype(np.float32), r["text"]) for r in good]


def test_every_model_loads_with_its_instance_count_and_binds_loopback(deployed):
    import tritonclient.http as httpclient

    from hackathon.serve.server import load_serve_config

    c = httpclient.InferenceServerClient(deployed.http)
    loaded = {m["name"]: m.get("state") for m in c.get_model_repository_index()}
    assert {"asr", "tts", "detect", "gate", "asr_encoder", "tts_fastpitch", "detect_ssd"} <= set(loaded)
    assert set(loaded.values()) == {"READY"}, loaded
    instances = load_serve_config(None).deploy.instances
    for model in loaded:
        assert c.get_model_config(model)["instance_group"][0]["count"] == instances[model], model
    listening = [line.split()[1] for t in ("/proc/net/tcp", "/proc/net/tcp6")
                 for line in open(t).read().splitlines()[1:] if line.split()[3] == "0A"]
    for port in (deployed.http, deployed.grpc):
        addrs = {a.rsplit(":", 1)[0] for a in listening if int(a.rsplit(":", 1)[1], 16) == int(port.split(":")[1])}
        assert addrs and addrs <= {"0100007F", "0000000000000000FFFF00000100007F"}, (port, addrs)


@pytest.mark.parametrize("protocol", ("http", "grpc"))
def test_same_transcripts_boxes_and_audio_as_hackathon_serve(deployed, triton_server, clips, protocol):
    for audio, text in clips[:3]:
        assert text_of(infer(deployed, protocol, "asr", {"audio": audio})["text"]) == text
    for label in ("with_mask", "without_mask"):
        image = png_bytes(mask_image(label)[0])
        ours, theirs = (infer(s, protocol, "detect", {"image": image}) for s in (deployed, triton_server))
        assert [v for v in ours["labels"] if v] == [v for v in theirs["labels"] if v] and ours["labels"][0] == label.encode()
        np.testing.assert_allclose(ours["boxes"], theirs["boxes"], atol=1e-3)
        np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=1e-4)
    text = {"text": np.array(["您好，张伟，欢迎回家。".encode()], dtype=object)}
    ours, theirs = (infer(s, protocol, "tts", text) for s in (deployed, triton_server))
    assert int(ours["sample_rate"][0]) == int(theirs["sample_rate"][0])
    assert len(ours["audio"]) == len(theirs["audio"]) > 0
    np.testing.assert_allclose(ours["audio"], theirs["audio"], atol=1e-3)


@pytest.mark.parametrize("protocol", ("http", "grpc"))
def test_same_gate_decisions_and_replies_as_hackathon_serve(deployed, triton_server, clips, protocol):
    from PIL import Image

    audio = clips[0][0]
    name = np.array(["王芳".encode()], dtype=object)
    wall = png_bytes(Image.new("RGB", (320, 240), (120, 120, 120)))
    cases = {"admit": (audio, png_bytes(mask_image("with_mask")[0])),
             "no_mask": (audio, png_bytes(mask_image("without_mask")[0])),
             "no_face": (audio, wall), "silence": (np.zeros(16000, dtype=np.float32), png_bytes(mask_image("with_mask")[0]))}
    decisions = {}
    for case, (sound, image) in cases.items():
        ours, theirs = (infer(s, protocol, "gate", {"audio": sound, "image": image, "name": name})
                        for s in (deployed, triton_server))
        for key in ("transcript", "phrase_ok", "mask", "admit", "reply_text", "sample_rate"):
            assert ours[key].tolist() == theirs[key].tolist(), (case, key, ours[key], theirs[key])
        np.testing.assert_allclose(ours["reply_audio"], theirs["reply_audio"], atol=1e-3)
        decisions[case] = (bool(ours["admit"][0]), text_of(ours["mask"]), bool(ours["phrase_ok"][0]))
    assert decisions == {"admit": (True, "with_mask", True), "no_mask": (False, "without_mask", True),
                         "no_face": (False, "no_face", True), "silence": (False, "with_mask", False)}


def load_serve_config_instances(model: str) -> int:
    from hackathon.serve.server import load_serve_config

    return int(load_serve_config(None).deploy.instances[model])


def send_together(server, model: str, rows: list[dict]) -> list:
    """Every row as its own request, all in flight at once (threads), answers in order (exceptions kept)."""
    answers = [None] * len(rows)

    def one(i):
        try:
            answers[i] = infer(server, "http", model, rows[i])
        except Exception as exc:  # noqa: BLE001 - checked by the caller
            answers[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_a_batch_of_8_requests_is_one_python_call_and_one_network_call(deployed, clips):
    """Triton's statistics count model executions: 8 concurrent asr requests (queue delay 0.4 s) reach the asr
    Python model as ONE execute() and the encoder as ONE padded network call of 8 rows."""
    rows = [{"audio": clips[i % len(clips)][0]} for i in range(8)]
    before = {m: stats(deployed, m) for m in ("asr", "asr_encoder")}
    answers = send_together(deployed, "asr", rows)
    assert [text_of(a["text"]) for a in answers] == [clips[i % len(clips)][1] for i in range(8)]
    after = {m: stats(deployed, m, before[m][1] + 8) for m in ("asr", "asr_encoder")}
    assert (after["asr"][0] - before["asr"][0], after["asr"][1] - before["asr"][1]) == (1, 8)
    assert (after["asr_encoder"][0] - before["asr_encoder"][0], after["asr_encoder"][1] - before["asr_encoder"][1]) \
        == (1, 8)


def test_a_bad_request_in_the_batch_gets_its_own_400_and_the_others_their_answers(deployed, clips):
    from tritonclient.utils import InferenceServerException

    rows = [{"audio": clips[0][0]} for _ in range(4)] + [{"audio": np.full(16000, np.nan, dtype=np.float32)}]
    before = stats(deployed, "asr")[0]
    answers = send_together(deployed, "asr", rows)
    assert [text_of(a["text"]) for a in answers[:4]] == [clips[0][1]] * 4
    assert isinstance(answers[4], InferenceServerException) and "400" in str(answers[4].status())
    assert "NaN" in answers[4].message()
    assert stats(deployed, "asr")[0] - before == 1  # the bad one was answered inside the same batch


def test_the_gate_sends_asr_and_detect_together_and_speaks_each_reply_once(deployed, clips):
    """8 gate requests in one batch: async BLS puts all 8 asr and 8 detect calls in flight before waiting on any
    (so asr batches them), then tts once per reply text not cached before."""
    image = png_bytes(mask_image("with_mask")[0])
    name = np.array(["李娜".encode()], dtype=object)  # a name no other test uses: its greeting is not cached yet
    rows = [{"audio": clips[0][0], "image": image, "name": name} for _ in range(8)]
    models = ("gate", "asr", "detect", "tts")
    before = {m: stats(deployed, m) for m in models}
    answers = send_together(deployed, "gate", rows)
    assert all(bool(a["admit"][0]) for a in answers) and text_of(answers[0]["reply_text"]) == \
        "您好，李娜，欢迎回家，二维码有效请您通过。"
    rows_seen = {"gate": 8, "asr": 8, "detect": 8, "tts": 1}
    after = {m: stats(deployed, m, before[m][1] + rows_seen[m]) for m in models}
    delta = {m: (after[m][0] - before[m][0], after[m][1] - before[m][1]) for m in models}
    assert delta["gate"] == (1, 8)
    # all 16 BLS calls in flight at once: asr batches them (serial BLS would be 8 executes of 1; measured 1-2)
    assert delta["asr"][0] <= 2 and delta["asr"][1] == 8 and delta["detect"][1] == 8
    assert delta["tts"] == (1, 1)  # one reply text, synthesised once
    for _ in range(4):  # each gate instance (a process) keeps its own cache: at most one synthesis per instance
        again = send_together(deployed, "gate", rows[:2])
        np.testing.assert_array_equal(again[0]["reply_audio"], answers[0]["reply_audio"])
    assert stats(deployed, "tts")[1] - before["tts"][1] <= load_serve_config_instances("gate")
