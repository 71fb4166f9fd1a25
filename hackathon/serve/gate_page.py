"""`hackathon gate`: the web page people at the residential gate use (Gradio, served on 127.0.0.1).

Speech (recorded or uploaded), a photo (webcam or upload) and a typed name go to the Triton `gate`
model; the page shows the transcript, the photo with the `detect` model's boxes, the decision and the
reply audio. The page logic is plain functions (request building, response parsing, box drawing,
error wording) so it is tested without a browser; `build_page` only wires them to Gradio widgets.

Nothing here fetches from the internet: Gradio's analytics and share links are off and the default
theme's fonts are bundled, so the page renders on an offline machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hackathon.core.errors import HackathonError

# Set before gradio is imported anywhere in this process: no usage reports, no version check.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

ASR_SAMPLE_RATE = 16000  # the `audio` tensor of the gate/asr models is mono 16 kHz (docs/SERVING.md)
DEFAULT_URL = "127.0.0.1:8000"
# A gate request runs ASR + detection + TTS on a CPU; the first one also warms the models up.
NETWORK_TIMEOUT_S = 300.0
CONNECT_TIMEOUT_S = 5.0
GATE_OUTPUTS = ("transcript", "phrase_ok", "mask", "admit", "reply_text", "reply_audio", "sample_rate")
DETECT_OUTPUTS = ("boxes", "scores", "labels")
# Why the gate refuses, in words a resident understands, by the `mask` output.
MASK_WORDS = {
    "with_mask": "mask worn",
    "without_mask": "no mask",
    "mask_weared_incorrect": "mask worn incorrectly (cover nose and mouth)",
    "no_face": "no face found in the photo",
}
# Box colours by class: green = ok, red = no mask, orange = worn incorrectly, blue = anything else.
BOX_COLOURS = {"with_mask": (0, 170, 0), "without_mask": (220, 0, 0), "mask_weared_incorrect": (255, 140, 0)}
OTHER_BOX_COLOUR = (0, 90, 220)
ERROR_DETAIL_CHARS = 800  # a server traceback is cut to this on the page; the full one is in its console
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class GatePageError(HackathonError):
    """A problem the page shows to the person at the gate instead of a result; `detail` (e.g. the
    server's own words) goes below the message, for whoever runs the server."""

    def __init__(self, message: str, fix: str | None = None, detail: str = ""):
        super().__init__(message, fix=fix)
        self.detail = detail


@dataclass(frozen=True)
class GateResult:
    """The `gate` model's answer, decoded from Triton tensors."""

    transcript: str
    phrase_ok: bool
    mask: str
    admit: bool
    reply_text: str
    reply_audio: np.ndarray
    sample_rate: int


@dataclass(frozen=True)
class Detections:
    """The `detect` model's answer: boxes (x1, y1, x2, y2 pixels), scores and class labels."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    labels: tuple[str, ...] = ()


# ---------------------------------------------------------------- inputs

def load_speech(path: str | os.PathLike) -> np.ndarray:
    """Whatever the browser recorded or the person uploaded -> mono float32 at 16 kHz."""
    from data_tools.audio import read_audio, resample, to_mono

    audio, sr = read_audio(path)  # AudioReadError (a HackathonError) names the file when it is not audio
    return resample(to_mono(audio), sr, ASR_SAMPLE_RATE)


def load_photo(path: str | os.PathLike) -> bytes:
    """The photo as encoded JPEG/PNG bytes (the `image` tensor); other formats are re-encoded as PNG."""
    data = Path(path).read_bytes()
    if data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC):
        return data
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            out = io.BytesIO()
            image.convert("RGB").save(out, format="PNG")
    except (UnidentifiedImageError, OSError) as exc:
        raise GatePageError(f"the photo ({Path(path).name}) is not an image the page can read",
                            fix="upload a JPEG or PNG photo, or take one with the webcam") from exc
    return out.getvalue()


def check_request(audio_path: str | None, image_path: str | None, name: str | None) -> str:
    """Refuse an incomplete form before anything is sent; returns the stripped name."""
    missing = [what for what, value in (("speech (record or upload a clip)", audio_path),
                                        ("a photo (upload one or use the webcam)", image_path))
               if not value]
    name = (name or "").strip()
    if not name:
        missing.append("your name")
    if missing:
        raise GatePageError("missing: " + "; ".join(missing), fix="fill in every part of the form, then press the button")
    return name


def gate_inputs(audio: np.ndarray, image: bytes, name: str) -> list:
    """tritonclient HTTP inputs for the `gate` model: audio FP32 [-1], image UINT8 [-1], name BYTES [1],
    each with the leading batch dimension of Triton's batching models (a batch of one)."""
    import tritonclient.http as triton_http

    tensors = {
        "audio": (np.ascontiguousarray(audio, dtype=np.float32)[None, :], "FP32"),
        "image": (np.frombuffer(image, dtype=np.uint8)[None, :], "UINT8"),
        "name": (np.array([[name.encode("utf-8")]], dtype=np.object_), "BYTES"),
    }
    inputs = []
    for tensor_name, (array, datatype) in tensors.items():
        tensor = triton_http.InferInput(tensor_name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return inputs


def detect_inputs(image: bytes) -> list:
    """tritonclient HTTP input for the `detect` model: image UINT8 [-1] (encoded bytes), batch of one."""
    import tritonclient.http as triton_http

    array = np.frombuffer(image, dtype=np.uint8)[None, :]
    tensor = triton_http.InferInput("image", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array, binary_data=True)
    return [tensor]


# ---------------------------------------------------------------- outputs

def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _first(result: Any, name: str) -> Any:
    array = result.as_numpy(name)
    if array is None or array.size == 0:
        raise GatePageError(f"the server's answer has no `{name}` output",
                            fix="the server runs a different gate model than this page expects; "
                                "update and restart `hackathon serve`")
    return array.reshape(-1)[0]


def parse_gate(result: Any) -> GateResult:
    """Decode a tritonclient InferResult (anything with as_numpy(name)) of the `gate` model (batch of one)."""
    audio = result.as_numpy("reply_audio")
    return GateResult(
        transcript=_text(_first(result, "transcript")),
        phrase_ok=bool(_first(result, "phrase_ok")),
        mask=_text(_first(result, "mask")),
        admit=bool(_first(result, "admit")),
        reply_text=_text(_first(result, "reply_text")),
        reply_audio=np.zeros(0, np.float32) if audio is None else audio.reshape(-1).astype(np.float32),
        sample_rate=int(_first(result, "sample_rate")),
    )


def parse_detect(result: Any) -> Detections:
    """Decode the `detect` model's boxes FP32 [-1, 4], scores FP32 [-1], labels BYTES [-1]."""
    boxes = result.as_numpy("boxes")
    scores = result.as_numpy("scores")
    labels = result.as_numpy("labels")
    boxes = np.zeros((0, 4), np.float32) if boxes is None else boxes.reshape(-1, 4).astype(np.float32)
    scores = np.zeros(len(boxes), np.float32) if scores is None else scores.reshape(-1).astype(np.float32)
    names = () if labels is None else tuple(_text(label) for label in labels.reshape(-1))
    if not (len(boxes) == len(scores) == len(names)):
        raise GatePageError(f"the detect model answered {len(boxes)} boxes, {len(scores)} scores, {len(names)} labels",
                            fix="the server's detect model does not match docs/SERVING.md; restart `hackathon serve`")
    real = [i for i, name in enumerate(names) if name]  # label b"" = a padding slot (docs/SERVING.md), not a face
    return Detections(boxes=boxes[real], scores=scores[real], labels=tuple(names[i] for i in real))


def refusal_reasons(result: GateResult) -> list[str]:
    """Why the gate said no, one phrase per failed check (empty when admitted)."""
    if result.admit:
        return []
    reasons = []
    if not result.phrase_ok:
        heard = result.transcript.strip() or "nothing"
        reasons.append(f"pass phrase not recognised (heard: “{heard}”)")
    if result.mask != "with_mask":
        reasons.append(MASK_WORDS.get(result.mask, f"mask check: {result.mask}"))
    return reasons or ["the gate refused (no reason given by the server)"]


def decision_markdown(result: GateResult) -> str:
    """The decision line the page shows: admitted, or refused and why, then the gate's reply."""
    if result.admit:
        head = "## ADMITTED"
    else:
        head = "## REFUSED: " + "; ".join(refusal_reasons(result))
    return f"{head}\n\nGate says: {result.reply_text}"


def reply_for_player(result: GateResult) -> tuple[int, np.ndarray] | None:
    """(sample_rate, int16 samples) for the reply player, or None when the server sent no audio."""
    if result.reply_audio.size == 0:
        return None
    samples = np.clip(result.reply_audio, -1.0, 1.0)
    return result.sample_rate, (samples * 32767.0).astype(np.int16)


def draw_boxes(image: bytes, detections: Detections):
    """The photo (PIL RGB) with each box outlined in its class colour and labelled `class score`."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    photo = Image.open(io.BytesIO(image)).convert("RGB")
    draw = ImageDraw.Draw(photo)
    width = max(2, round(max(photo.size) / 200))
    font = ImageFont.load_default(size=max(12, round(max(photo.size) / 30)))
    for (x1, y1, x2, y2), score, label in zip(detections.boxes, detections.scores, detections.labels):
        # Clamp to the photo: a box past the edge would otherwise be drawn off-canvas and look missing.
        x1, x2 = sorted((min(max(float(x1), 0.0), photo.width - 1), min(max(float(x2), 0.0), photo.width - 1)))
        y1, y2 = sorted((min(max(float(y1), 0.0), photo.height - 1), min(max(float(y2), 0.0), photo.height - 1)))
        colour = BOX_COLOURS.get(label, OTHER_BOX_COLOUR)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        caption = f"{label} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), caption, font=font)
        text_y = y1 - (bottom - top) - 2 * width if y1 - (bottom - top) - 2 * width >= 0 else y1 + width
        draw.rectangle((x1, text_y, x1 + (right - left) + 2 * width, text_y + (bottom - top) + 2 * width), fill=colour)
        draw.text((x1 + width, text_y + width - (top - y1)), caption, fill=(255, 255, 255), font=font)
    return photo


# ---------------------------------------------------------------- talking to Triton

def explain_server_error(exc: BaseException, url: str) -> GatePageError:
    """Turn a tritonclient / socket failure into words for the page (the page itself keeps working)."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "").strip()
        detail = (exc.message() or str(exc)).strip()
        if status.startswith("4"):  # HTTP 4xx: the request was bad (the server names the input), the server is fine
            first, _, rest = detail.partition("\n")
            return GatePageError(f"the server refused this request: {first}",
                                 fix="check the recording, the photo and the name, then try again", detail=rest)
        return GatePageError(f"the server failed on this request ({status or 'no status'})",
                             fix="try again; if it keeps failing, look at the `hackathon serve` console",
                             detail=detail)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return GatePageError(f"cannot reach the Triton server at {url} ({exc.__class__.__name__}: {exc})",
                             fix=f"start it with `hackathon serve` (or pass `hackathon gate --url HOST:PORT`)")
    return GatePageError(f"talking to the Triton server at {url} failed: {exc.__class__.__name__}: {exc}",
                         fix="try again; if it keeps failing, look at the `hackathon serve` console")


def ask_gate(url: str, audio: np.ndarray, image: bytes, name: str) -> tuple[GateResult, Detections]:
    """One `gate` request and one `detect` request (for the boxes) over Triton's HTTP API."""
    import tritonclient.http as triton_http

    try:
        # One client per request: tritonclient's HTTP client is gevent-based and must stay in the
        # thread that made it, and Gradio runs each click in a worker thread.
        client = triton_http.InferenceServerClient(url, connection_timeout=CONNECT_TIMEOUT_S,
                                                   network_timeout=NETWORK_TIMEOUT_S)
        try:
            gate = client.infer("gate", gate_inputs(audio, image, name),
                                outputs=[triton_http.InferRequestedOutput(n, binary_data=True) for n in GATE_OUTPUTS])
            detect = client.infer("detect", detect_inputs(image),
                                  outputs=[triton_http.InferRequestedOutput(n, binary_data=True) for n in DETECT_OUTPUTS])
        finally:
            client.close()
    except GatePageError:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message on the page
        raise explain_server_error(exc, url) from exc
    return parse_gate(gate), parse_detect(detect)


def _markdown_text(text: str) -> str:
    """Text shown as itself in Markdown (a name like *x* or <b> stays literal)."""
    return "".join("\\" + ch if ch in "\\`*_{}[]<>()#+-.!|~" else ch for ch in " ".join(text.split()))


def error_markdown(exc: HackathonError) -> str:
    """The error box: what went wrong, what to do about it, then the server's details (shortened)."""
    parts = [f"### Error: {_markdown_text(exc.message)}"]
    if exc.fix:
        parts.append(f"**What to do:** {exc.fix}")  # our own words, with `commands` formatted
    detail = getattr(exc, "detail", "").strip()
    if detail:
        detail = detail if len(detail) <= ERROR_DETAIL_CHARS else detail[:ERROR_DETAIL_CHARS] + " …"
        parts.append("Details:\n\n" + "\n".join("    " + line for line in detail.splitlines()))
    return "\n\n".join(parts)


def answer(url: str, audio_path: str | None, image_path: str | None, name: str | None,
           ask: Callable[[str, np.ndarray, bytes, str], tuple[GateResult, Detections]] = ask_gate) -> dict[str, Any]:
    """Everything the page shows for one button press; an error fills `error` and leaves the rest empty."""
    shown: dict[str, Any] = {"decision": "", "transcript": "", "photo": None, "reply": None, "error": ""}
    try:
        name = check_request(audio_path, image_path, name)
        audio = load_speech(audio_path)
        image = load_photo(image_path)
        result, detections = ask(url, audio, image, name)
        shown.update(decision=decision_markdown(result), transcript=result.transcript,
                     photo=draw_boxes(image, detections), reply=reply_for_player(result))
    except HackathonError as exc:
        shown["error"] = error_markdown(exc)
    return shown


# ---------------------------------------------------------------- the page

def build_page(url: str):
    """The Gradio Blocks page, wired to `answer` for the Triton server at `url`."""
    import gradio as gr

    with gr.Blocks(title="Residential gate", analytics_enabled=False) as page:
        gr.Markdown("# Residential gate\nSay the pass phrase, show your face (with a mask) and type your name.")
        with gr.Row():
            # No "share" buttons anywhere: they post to Hugging Face, and this page stays on the machine.
            speech = gr.Audio(sources=["microphone", "upload"], type="filepath", label="Speech", elem_id="speech",
                              buttons=["download"])
            # image_mode=None: hand over the file as uploaded (JPEG/PNG go to the server byte for byte).
            photo = gr.Image(sources=["upload", "webcam"], type="filepath", image_mode=None, label="Photo",
                             elem_id="photo", buttons=["fullscreen"])
        name = gr.Textbox(label="Name", placeholder="your name", elem_id="name")
        ask_button = gr.Button("Ask the gate", variant="primary", elem_id="ask")
        error = gr.Markdown(elem_id="gate-error")
        decision = gr.Markdown(elem_id="decision")
        with gr.Row():
            boxes = gr.Image(label="What the camera saw", type="pil", interactive=False, format="png",
                             elem_id="boxes", buttons=["download", "fullscreen"])
            with gr.Column():
                transcript = gr.Textbox(label="What the gate heard", interactive=False, elem_id="transcript")
                reply = gr.Audio(label="The gate's reply", type="numpy", autoplay=False, interactive=False,
                                 elem_id="reply", buttons=["download"])

        def on_ask(audio_path, image_path, typed_name):
            shown = answer(url, audio_path, image_path, typed_name)
            return shown["error"], shown["decision"], shown["photo"], shown["transcript"], shown["reply"]

        outputs = [error, decision, boxes, transcript, reply]
        # Clear the last answer first, so a new press never leaves an old decision on screen.
        ask_button.click(lambda: ("", "", None, "", None), outputs=outputs, queue=False).then(
            on_ask, inputs=[speech, photo, name], outputs=outputs)
    return page


def server_status(url: str) -> str:
    """One line for the console at start: is the gate model ready at `url`?"""
    try:
        import tritonclient.http as triton_http

        client = triton_http.InferenceServerClient(url, connection_timeout=CONNECT_TIMEOUT_S,
                                                   network_timeout=CONNECT_TIMEOUT_S)
        try:
            ready = client.is_model_ready("gate")
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001
        return f"Triton at {url}: not reachable ({explain_server_error(exc, url).message}); the page will say so"
    return f"Triton at {url}: gate model ready" if ready else f"Triton at {url}: up, but no `gate` model is ready"


def serve_page(url: str = DEFAULT_URL, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: int = 50,
               echo: Callable[[str], None] = print) -> None:
    """Serve the page until Ctrl-C. No share link; 127.0.0.1 unless the caller says otherwise."""
    echo(server_status(url))
    page = build_page(url)
    echo(f"gate page: http://{host}:{port}/  (Ctrl-C stops it)")
    page.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                        pwa=False, mcp_server=False, footer_links=[], show_error=False, quiet=True,
                        max_file_size=f"{max_upload_mb}mb")
