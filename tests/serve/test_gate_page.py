"""The gate page (`hackathon gate`): its logic without a browser, then the real page in Debian's chromium
against the real Triton server (tests/serve/conftest.py) with real models."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from hackathon.serve import gate_page as gp
from tests.serve.conftest import free_ports
from tests.serve.test_serve import PASS_PHRASE, held_out_clip, mask_image  # noqa: F401 - held_out_clip is a fixture

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def kserve_response(outputs: dict[str, tuple[np.ndarray, str]]):
    """A real tritonclient InferResult parsed from a KServe v2 binary response body, as Triton sends it."""
    import tritonclient.http as triton_http
    from tritonclient.utils import serialize_byte_tensor

    header, blobs = {"model_name": "gate", "outputs": []}, []
    for name, (array, datatype) in outputs.items():
        if datatype == "BYTES":
            serialized = serialize_byte_tensor(array)  # an object array holding one bytes, or a byte array
            blob = serialized.item() if serialized.dtype == np.object_ else serialized.tobytes()
        else:
            blob = np.ascontiguousarray(array).tobytes()
        header["outputs"].append({"name": name, "datatype": datatype, "shape": list(array.shape),
                                  "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps(header).encode()
    return triton_http.InferResult.from_response_body(head + b"".join(blobs), header_length=len(head))


def gate_response(admit=True, phrase_ok=True, mask="with_mask", transcript="你好大白请让我进入小区",
                  reply="您好，张三，欢迎回家，二维码有效请您通过。", audio=None, rate=22050):
    audio = np.linspace(-0.5, 0.5, 2205, dtype=np.float32) if audio is None else audio
    return kserve_response({
        "transcript": (np.array([[transcript.encode()]], dtype=np.object_), "BYTES"),
        "phrase_ok": (np.array([[phrase_ok]]), "BOOL"),
        "mask": (np.array([[mask.encode()]], dtype=np.object_), "BYTES"),
        "admit": (np.array([[admit]]), "BOOL"),
        "reply_text": (np.array([[reply.encode()]], dtype=np.object_), "BYTES"),
        "reply_audio": (audio.reshape(1, -1), "FP32"),
        "sample_rate": (np.array([[rate]], dtype=np.int32), "INT32"),
    })


@pytest.fixture
def photo_jpeg(tmp_path) -> Path:
    path = tmp_path / "face.jpg"
    Image.new("RGB", (200, 150), (200, 180, 160)).save(path, format="JPEG")
    return path


@pytest.fixture
def clip_44k_stereo(tmp_path) -> Path:
    path = tmp_path / "clip.wav"
    t = np.arange(44100) / 44100.0
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 220 * t)], axis=1), 44100)
    return path


# ---------------------------------------------------------------- inputs

def test_speech_from_the_browser_becomes_mono_16k(clip_44k_stereo):
    audio = gp.load_speech(clip_44k_stereo)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 2  # 1 s at 44.1 kHz -> 1 s at 16 kHz
    assert 0.1 < np.abs(audio).max() <= 0.45  # the two channels were averaged, not dropped


def test_speech_that_is_not_audio_is_named(tmp_path):
    bad = tmp_path / "note.wav"
    bad.write_text("this is not a recording")
    with pytest.raises(gp.HackathonError) as err:
        gp.load_speech(bad)
    assert "note.wav" in err.value.message


def test_photo_bytes_go_as_uploaded_and_other_formats_become_png(tmp_path, photo_jpeg):
    assert gp.load_photo(photo_jpeg) == photo_jpeg.read_bytes()
    webp = tmp_path / "webcam.webp"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(webp, format="WEBP")
    png = gp.load_photo(webp)
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == (64, 48)


def test_a_photo_that_is_not_an_image_is_refused_with_a_fix(tmp_path):
    bad = tmp_path / "photo.png.txt"
    bad.write_bytes(b"GIF? no, just text")
    with pytest.raises(gp.GatePageError) as err:
        gp.load_photo(bad)
    assert "photo.png.txt" in err.value.message and "JPEG or PNG" in err.value.fix


def test_an_incomplete_form_lists_everything_missing():
    with pytest.raises(gp.GatePageError) as err:
        gp.check_request(None, "/x.jpg", "   ")
    assert "speech" in err.value.message and "your name" in err.value.message and "photo" not in err.value.message
    assert gp.check_request("/a.wav", "/x.jpg", " 张三 ") == "张三"


def test_gate_request_tensors_match_the_interface(photo_jpeg):
    from tritonclient.utils import deserialize_bytes_tensor

    audio = np.zeros(1600, np.float32)
    image = photo_jpeg.read_bytes()
    inputs = {tensor.name(): tensor for tensor in gp.gate_inputs(audio, image, "张三")}
    assert {name: (t.datatype(), t.shape()) for name, t in inputs.items()} == {
        "audio": ("FP32", [1, 1600]), "image": ("UINT8", [1, len(image)]), "name": ("BYTES", [1, 1])}
    assert inputs["image"]._get_binary_data() == image
    assert list(deserialize_bytes_tensor(inputs["name"]._get_binary_data())) == ["张三".encode()]
    (detect,) = gp.detect_inputs(image)
    assert (detect.name(), detect.datatype(), detect.shape()) == ("image", "UINT8", [1, len(image)])


# ---------------------------------------------------------------- outputs

def test_gate_answer_is_decoded_from_the_wire_format():
    result = gp.parse_gate(gate_response())
    assert result.admit and result.phrase_ok and result.mask == "with_mask"
    assert result.transcript == "你好大白请让我进入小区"
    assert result.reply_text.startswith("您好，张三")
    assert result.sample_rate == 22050 and result.reply_audio.shape == (2205,)


def test_a_missing_output_says_the_server_is_different():
    response = kserve_response({"transcript": (np.array([[b"x"]], dtype=np.object_), "BYTES")})
    with pytest.raises(gp.GatePageError) as err:
        gp.parse_gate(response)
    assert "phrase_ok" in err.value.message


def test_detections_are_decoded_and_checked():
    boxes = np.array([[[10, 20, 60, 90], [0, 0, 5, 5]]], np.float32)
    ok = kserve_response({"boxes": (boxes, "FP32"), "scores": (np.array([[0.9, 0.4]], np.float32), "FP32"),
                          "labels": (np.array([[b"with_mask", b"without_mask"]], dtype=np.object_), "BYTES")})
    detections = gp.parse_detect(ok)
    assert detections.labels == ("with_mask", "without_mask")
    np.testing.assert_allclose(detections.boxes, boxes[0])
    bad = kserve_response({"boxes": (boxes, "FP32"), "scores": (np.array([[0.9]], np.float32), "FP32"),
                           "labels": (np.array([[b"with_mask"]], dtype=np.object_), "BYTES")})
    with pytest.raises(gp.GatePageError, match="2 boxes, 1 scores, 1 labels"):
        gp.parse_detect(bad)
    # a photo without faces: the server sends one padding slot (label b"", score 0), which is not a box to draw
    padding = kserve_response({"boxes": (np.zeros((1, 1, 4), np.float32), "FP32"),
                               "scores": (np.zeros((1, 1), np.float32), "FP32"),
                               "labels": (np.array([[b""]], dtype=np.object_), "BYTES")})
    none = gp.parse_detect(padding)
    assert none.labels == () and none.boxes.shape == (0, 4) and none.scores.shape == (0,)


@pytest.mark.parametrize("phrase_ok, mask, expected", [
    (False, "with_mask", ["pass phrase not recognised (heard: “你好”)"]),
    (True, "without_mask", ["no mask"]),
    (True, "no_face", ["no face found in the photo"]),
    (False, "mask_weared_incorrect", ["pass phrase not recognised (heard: “你好”)",
                                      "mask worn incorrectly (cover nose and mouth)"]),
])
def test_refusals_say_why(phrase_ok, mask, expected):
    result = gp.parse_gate(gate_response(admit=False, phrase_ok=phrase_ok, mask=mask, transcript="你好",
                                         reply="对不起"))
    assert gp.refusal_reasons(result) == expected
    text = gp.decision_markdown(result)
    assert text.startswith("## REFUSED: ") and all(reason in text for reason in expected) and "对不起" in text


def test_admitted_decision_shows_the_reply():
    text = gp.decision_markdown(gp.parse_gate(gate_response()))
    assert text.startswith("## ADMITTED") and "欢迎回家" in text


def test_reply_audio_is_int16_for_the_player_and_absent_when_empty():
    rate, samples = gp.reply_for_player(gp.parse_gate(gate_response(audio=np.array([0.0, 0.5, -2.0], np.float32))))
    assert rate == 22050 and samples.dtype == np.int16
    assert samples.tolist() == [0, 16383, -32767]  # clipped to [-1, 1] before scaling
    assert gp.reply_for_player(gp.parse_gate(gate_response(audio=np.zeros(0, np.float32)))) is None


def test_boxes_are_drawn_in_their_class_colour_and_clamped(photo_jpeg):
    detections = gp.Detections(boxes=np.array([[40, 60, 120, 140], [150, -30, 400, 100]], np.float32),
                               scores=np.array([0.91, 0.55], np.float32), labels=("with_mask", "without_mask"))
    drawn = gp.draw_boxes(photo_jpeg.read_bytes(), detections)
    original = Image.open(photo_jpeg).convert("RGB")
    assert drawn.size == original.size
    pixels = np.asarray(drawn).astype(int)
    # left edge of the first box, below its caption: pure green; right edge of the clamped second box: red.
    assert tuple(pixels[120, 40]) == gp.BOX_COLOURS["with_mask"]
    assert tuple(pixels[80, 199]) == gp.BOX_COLOURS["without_mask"]
    # the inside of a box is untouched photo.
    assert np.abs(pixels[100, 80] - np.asarray(original).astype(int)[100, 80]).max() <= 2


# ---------------------------------------------------------------- errors keep the page working

def test_server_down_is_a_readable_error_not_a_crash(clip_44k_stereo, photo_jpeg):
    url = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens here
    for _ in range(2):  # and the second press behaves the same: the page keeps working
        shown = gp.answer(url, str(clip_44k_stereo), str(photo_jpeg), "张三")
        assert f"cannot reach the Triton server at {url}" in as_rendered(shown["error"])
        assert "`hackathon serve`" in shown["error"]
        assert shown["decision"] == "" and shown["reply"] is None and shown["photo"] is None


def as_rendered(markdown: str) -> str:
    """Markdown's backslash escapes removed: the text a reader sees."""
    return re.sub(r"\\(.)", r"\1", markdown)


def test_a_4xx_from_the_server_is_shown_as_a_refused_request():
    from tritonclient.utils import InferenceServerException

    refused = gp.explain_server_error(InferenceServerException("name: longer than 32 characters", status="400"),
                                      "127.0.0.1:8000")
    assert refused.message == "the server refused this request: name: longer than 32 characters"
    failed = gp.explain_server_error(InferenceServerException("Traceback (most recent call last):\n" + "x" * 5000,
                                                              status="500"), "127.0.0.1:8000")
    assert failed.message == "the server failed on this request (500)" and "hackathon serve" in failed.fix
    shown = gp.error_markdown(failed)
    assert shown.startswith("### Error: the server failed on this request \\(500\\)")
    assert "    Traceback (most recent call last):" in shown  # the details as a literal block, cut short
    assert len(shown) < gp.ERROR_DETAIL_CHARS + 400 and shown.endswith(" …")


def test_names_and_paths_in_errors_stay_literal_text():
    shown = gp.error_markdown(gp.GatePageError("name *<b>bold</b>* # not a heading"))
    assert "<b>" not in shown and as_rendered(shown) == "### Error: name *<b>bold</b>* # not a heading"


def test_an_incomplete_form_never_calls_the_server(photo_jpeg):
    def ask(*_):
        raise AssertionError("the server must not be called")

    shown = gp.answer("127.0.0.1:1", None, str(photo_jpeg), "", ask=ask)
    assert shown["error"].startswith("### Error: missing: speech") and "What to do" in shown["error"]


# ---------------------------------------------------------------- the real page in a real browser

def results_dir() -> Path:
    """Where the screenshots go (kept after the run): $HACKATHON_TEST_TMP/results/gate_page/."""
    path = Path(os.environ.get("HACKATHON_TEST_TMP", "/tmp/hackathon-tests")) / "results" / "gate_page"
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_page(triton_url: str, log: Path):
    """`hackathon gate` as the user starts it (the real CLI, a real Gradio server on 127.0.0.1)."""
    import urllib.request

    port = free_ports(1)[0]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hackathon.cli", "gate", "--url", triton_url,
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return proc, f"http://127.0.0.1:{port}/"
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"`hackathon gate` did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop_page(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class OfflineBrowser:
    """Debian's chromium, headless, driven by Playwright. Every request that leaves 127.0.0.1 is refused
    and recorded (the gate machine is offline: the page must render without fonts or scripts from a CDN)."""

    def __init__(self, fake_media: bool = False):
        from playwright.sync_api import sync_playwright

        # fake_media: chromium's built-in test microphone (beeps) and camera (a moving test pattern),
        # allowed without a permission prompt: the record and webcam paths run for real.
        args = CHROMIUM_ARGS + (["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
                                if fake_media else [])
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        context = self.browser.new_context(viewport={"width": 1280, "height": 1100},
                                           permissions=["microphone", "camera"] if fake_media else [])
        self.page = context.new_page()
        self.outside: list[str] = []
        self.page.route("**/*", self._only_loopback)

    def _only_loopback(self, route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def close(self):
        self.browser.close()
        self._playwright.stop()


def _browser(fake_media: bool):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (the gate page is tested in a real browser)")
    offline = OfflineBrowser(fake_media=fake_media)
    yield offline
    offline.close()


@pytest.fixture
def browser():
    yield from _browser(fake_media=False)


@pytest.fixture
def browser_with_devices():
    yield from _browser(fake_media=True)


def fill_form(page, clip: Path | None, photo: Path | None, name: str) -> None:
    if clip is not None:
        page.locator("#speech button[aria-label='Upload file']").click()  # the microphone is the default source
        page.locator("#speech input[type=file]").set_input_files(str(clip))
        page.locator("#speech audio").first.wait_for(state="attached")
    if photo is not None:
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        page.locator("#photo img").first.wait_for()
    page.locator("#name textarea, #name input").first.fill(name)


def press_and_wait(page, timeout_ms: int = 240_000) -> str:
    """Press the button and wait until the decision or an error appears; returns that text."""
    # Mark what is on screen now; the answer to this press is whatever heading appears unmarked.
    page.evaluate("() => document.querySelectorAll('#decision h2, #gate-error h3').forEach(e => e.dataset.old = 1)")
    page.locator("#ask").click()
    page.wait_for_function(
        "() => document.querySelector('#decision h2:not([data-old]), #gate-error h3:not([data-old])') !== null",
        timeout=timeout_ms)
    page.wait_for_timeout(500)  # let the other outputs of the same answer render
    return page.locator("#gate-error").inner_text() + page.locator("#decision").inner_text()


def reply_audio_sources(page) -> list[str]:
    return page.eval_on_selector_all("#reply audio", "els => els.map(e => e.currentSrc || e.src).filter(Boolean)")


@pytest.fixture(scope="module")
def gate_demo_inputs(held_out_clip, tmp_path_factory) -> dict:
    """Files a person would upload: the demo's held-out pass-phrase clip (wav) and demo mask photos (PNG)."""
    from data_tools.audio import write_wav

    folder = tmp_path_factory.mktemp("gate_page_inputs")
    audio, text = held_out_clip
    assert text == PASS_PHRASE, f"the ASR run got no pass-phrase clip right (best: {text})"
    files = {"clip": write_wav(folder / "pass_phrase.wav", audio, gp.ASR_SAMPLE_RATE), "name": "王芳"}
    for label in ("with_mask", "without_mask"):
        image, _ = mask_image(label)
        image.save(folder / f"{label}.png", format="PNG")
        files[label] = folder / f"{label}.png"
    return files


@pytest.mark.slow
def test_ask_gate_against_the_real_server(triton_server, gate_demo_inputs):
    audio = gp.load_speech(gate_demo_inputs["clip"])
    photo = gp.load_photo(gate_demo_inputs["with_mask"])
    result, detections = gp.ask_gate(triton_server.http, audio, photo, "王芳")
    assert result.admit and result.transcript == PASS_PHRASE and result.mask == "with_mask"
    assert result.reply_text == "您好，王芳，欢迎回家，二维码有效请您通过。"
    assert gp.reply_for_player(result)[1].size > result.sample_rate * 0.05  # the tiny FastPitch speaks fast
    assert "with_mask" in detections.labels
    drawn = np.asarray(gp.draw_boxes(photo, detections))
    assert (drawn == np.array(gp.BOX_COLOURS["with_mask"], np.uint8)).all(axis=-1).sum() > 50  # a box outline


@pytest.mark.slow
def test_gate_page_in_chromium_admits_refuses_and_survives_a_bad_request(triton_server, gate_demo_inputs, browser,
                                                                        tmp_path):
    proc, page_url = start_page(triton_server.http, tmp_path / "gate_page.log")
    shots = results_dir()
    try:
        page = browser.page
        page.goto(page_url)
        page.locator("#ask").wait_for()

        # 1. the demo speaker says the pass phrase, wearing a mask -> admitted, boxes drawn, reply playable
        fill_form(page, gate_demo_inputs["clip"], gate_demo_inputs["with_mask"], gate_demo_inputs["name"])
        shown = press_and_wait(page)
        page.screenshot(path=str(shots / "admitted.png"), full_page=True)
        print(f"screenshot: {shots / 'admitted.png'}")
        assert "ADMITTED" in shown, shown
        assert "您好，王芳，欢迎回家" in page.locator("#decision").inner_text()
        assert page.locator("#transcript textarea, #transcript input").first.input_value() == PASS_PHRASE
        assert page.locator("#boxes img").count() == 1
        assert reply_audio_sources(page), page.locator("#reply").inner_html()[:2000]
        assert page.eval_on_selector_all("#reply audio", "els => els.some(e => e.autoplay)") is False

        # 2. a name the server refuses (longer than the spec allows) -> the server's 4xx, in words
        page.locator("#name textarea, #name input").first.fill("名" * 40)
        shown = press_and_wait(page)
        page.screenshot(path=str(shots / "refused_request.png"), full_page=True)
        assert "the server refused this request" in shown and "name" in shown, shown
        assert page.locator("#decision h2").count() == 0

        # 3. the page still works: no mask -> refused, and it says why
        page.locator("#photo button[aria-label='Remove Image']").first.click()
        fill_form(page, None, gate_demo_inputs["without_mask"], gate_demo_inputs["name"])
        shown = press_and_wait(page)
        page.screenshot(path=str(shots / "refused_no_mask.png"), full_page=True)
        print(f"screenshot: {shots / 'refused_no_mask.png'}")
        assert "REFUSED: no mask" in shown and "对不起，王芳，请您戴好口罩。" in shown, shown
        assert page.locator("#gate-error h3").count() == 0
        assert reply_audio_sources(page)
        assert browser.outside == [], f"the page tried to reach the internet: {browser.outside}"
    finally:
        stop_page(proc)


def test_gate_page_with_the_server_down_shows_an_error_and_keeps_working(browser, tmp_path, clip_44k_stereo,
                                                                         photo_jpeg):
    dead_url = f"127.0.0.1:{free_ports(1)[0]}"
    proc, page_url = start_page(dead_url, tmp_path / "gate_page.log")
    try:
        assert "not reachable" in (tmp_path / "gate_page.log").read_text()
        page = browser.page
        page.goto(page_url)
        page.locator("#ask").wait_for()
        fill_form(page, clip_44k_stereo, photo_jpeg, "张三")
        for _ in range(2):  # the second press gets its own answer: the page did not hang
            shown = press_and_wait(page, timeout_ms=60_000)
            assert f"cannot reach the Triton server at {dead_url}" in shown, shown
            assert page.locator("#ask").is_enabled()
        page.screenshot(path=str(results_dir() / "server_down.png"), full_page=True)
        assert browser.outside == [], f"the page tried to reach the internet: {browser.outside}"
    finally:
        stop_page(proc)


@pytest.mark.slow
def test_gate_page_records_from_the_microphone_and_takes_a_webcam_photo(triton_server, browser_with_devices, tmp_path):
    """The other two sources: a recording made in the browser (chromium's test microphone: beeps) and a
    webcam snapshot (its test pattern) reach the server; beeps are not the pass phrase -> refused, saying so."""
    proc, page_url = start_page(triton_server.http, tmp_path / "gate_page.log")
    try:
        page = browser_with_devices.page
        page.goto(page_url)
        page.locator("#ask").wait_for()
        page.locator("#speech button.record-button").click()
        page.wait_for_timeout(2000)
        page.locator("#speech button.stop-button").first.click()
        # The recording is on the page server once its download link points there (the player itself lives
        # in WaveSurfer's shadow DOM, which document.querySelectorAll does not see; Playwright's locators do).
        page.locator("#speech a[download][href*='gradio_api/file=']").wait_for(state="attached")
        page.locator("#photo button[aria-label='Capture from camera']").click()  # the photo's default is upload
        page.get_by_text("Click to Access Webcam").click()
        # a snapshot taken before the camera's first frames play comes out empty (no image, nothing uploaded)
        page.wait_for_function("video => video.readyState >= 2 && video.currentTime > 0.3",
                               arg=page.locator("#photo video").element_handle())
        page.locator("#photo button[aria-label='capture photo']").click()
        page.locator("#photo img[src*='gradio_api/file=']").wait_for()  # the snapshot reached the page server
        page.locator("#name textarea, #name input").first.fill("王芳")
        shown = press_and_wait(page)
        page.screenshot(path=str(results_dir() / "microphone_webcam.png"), full_page=True)
        assert "REFUSED" in shown and "pass phrase not recognised" in shown, shown
        assert reply_audio_sources(page)
        assert browser_with_devices.outside == [], browser_with_devices.outside
    finally:
        stop_page(proc)
