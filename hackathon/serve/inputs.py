"""Input checks and decoding for the served models, shared by the Triton stub shim and the model callables.

Pure numpy + PIL (no torch): this module is imported inside Triton's Python-backend stub processes, where
each request is checked BEFORE it joins a batch, so one bad request gets its own client error and never
fails the good requests batched with it (see hackathon/serve/shim.py).

`limits` is the `limits` section of specs/serve/*.yaml as a plain dict.
"""

from __future__ import annotations

import io

import numpy as np

# Which checks apply to which input of which model (the tensor interface of docs/SERVING.md).
MODEL_INPUTS = {
    "asr": ("audio",),
    "tts": ("text",),
    "detect": ("image",),
    "gate": ("audio", "image", "name"),
}


class BadInput(ValueError):
    """A request input that breaks the interface or a cap; the message names the input and the fix."""


def _rows(value: np.ndarray, model: str, name: str) -> np.ndarray:
    """Every input is batched: [batch, ...]; a request without its batch dimension is refused."""
    if value.ndim < 1 or value.shape[0] < 1:
        raise BadInput(f"{model}: input '{name}' has shape {list(value.shape)}; expected [batch, ...] "
                       f"with batch >= 1")
    return value


def check_audio(row: np.ndarray, limits: dict, model: str = "asr") -> np.ndarray:
    """One clip (FP32 samples at limits.audio_sample_rate) -> the same clip, or BadInput naming the problem."""
    rate = int(limits["audio_sample_rate"])
    audio = np.asarray(row)
    if audio.dtype != np.float32:
        raise BadInput(f"{model}: input 'audio' is {audio.dtype}; send FP32 samples in [-1, 1] (mono, {rate} Hz)")
    audio = audio.reshape(-1)
    seconds = audio.size / rate
    if audio.size == 0:
        raise BadInput(f"{model}: input 'audio' is empty; send at least {limits['audio_min_seconds']} s of "
                       f"mono {rate} Hz samples")
    if seconds < float(limits["audio_min_seconds"]):
        raise BadInput(f"{model}: input 'audio' is {seconds:.3f} s long, shorter than the "
                       f"{limits['audio_min_seconds']} s minimum")
    if seconds > float(limits["audio_max_seconds"]):
        raise BadInput(f"{model}: input 'audio' is {seconds:.1f} s long, over the {limits['audio_max_seconds']} s "
                       f"cap (limits.audio_max_seconds); cut the recording before sending it")
    if not np.isfinite(audio).all():
        raise BadInput(f"{model}: input 'audio' contains NaN/inf samples: these are not audio samples "
                       f"(were file bytes sent as FP32? decode the file to samples first)")
    peak = float(np.abs(audio).max())
    if peak > float(limits["audio_max_abs"]):
        raise BadInput(f"{model}: input 'audio' has samples up to {peak:.3g}; float audio lies in [-1, 1] "
                       f"(were file bytes or int16 values sent as FP32? decode and scale to [-1, 1])")
    return audio


def decode_image(row: np.ndarray, limits: dict, model: str = "detect"):
    """Encoded JPEG/PNG bytes (UINT8 [-1]) -> RGB PIL image, or BadInput (corrupt, too big, wrong dtype)."""
    from PIL import Image, UnidentifiedImageError

    data = np.asarray(row)
    if data.dtype != np.uint8:
        raise BadInput(f"{model}: input 'image' is {data.dtype}; send the encoded JPEG/PNG file bytes as UINT8")
    data = data.reshape(-1)
    if data.size == 0:
        raise BadInput(f"{model}: input 'image' is empty; send the bytes of a JPEG or PNG file")
    if data.size > int(limits["image_max_bytes"]):
        raise BadInput(f"{model}: input 'image' is {data.size} bytes, over the {limits['image_max_bytes']} byte "
                       f"cap (limits.image_max_bytes); send a smaller JPEG")
    try:
        img = Image.open(io.BytesIO(data.tobytes()))
        width, height = img.size  # header only: the pixel cap is checked before decoding
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadInput(f"{model}: input 'image' is not a readable JPEG/PNG ({exc}); send the file's bytes "
                       f"unchanged") from None
    if width * height > int(limits["image_max_pixels"]):
        raise BadInput(f"{model}: input 'image' is {width}x{height} = {width * height / 1e6:.1f} megapixels, over "
                       f"the {int(limits['image_max_pixels']) / 1e6:.1f} MP cap (limits.image_max_pixels); "
                       f"downscale it first")
    try:
        img.load()
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadInput(f"{model}: input 'image' is corrupt or truncated ({exc}); send the whole file") from None


def decode_text(value, limits: dict, model: str, name: str, cap_key: str) -> str:
    """A BYTES element -> non-empty UTF-8 str under the cap, or BadInput."""
    raw = value if isinstance(value, (bytes, bytearray)) else (value.encode() if isinstance(value, str) else None)
    if raw is None:
        raise BadInput(f"{model}: input '{name}' must be BYTES (UTF-8 text), got {type(value).__name__}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{model}: input '{name}' is not UTF-8 ({exc.reason} at byte {exc.start}); "
                       f"encode the text as UTF-8") from None
    text = text.strip()
    if not text:
        raise BadInput(f"{model}: input '{name}' is empty; send a non-empty UTF-8 string")
    if "\x00" in text or any(ord(ch) < 32 for ch in text):
        raise BadInput(f"{model}: input '{name}' contains control characters; send plain text")
    if len(text) > int(limits[cap_key]):
        raise BadInput(f"{model}: input '{name}' is {len(text)} characters, over the {limits[cap_key]} cap "
                       f"(limits.{cap_key})")
    return text


def _text_rows(value: np.ndarray, limits: dict, model: str, name: str, cap_key: str) -> list[str]:
    rows = _rows(np.asarray(value, dtype=object), model, name)
    flat = rows.reshape(rows.shape[0], -1)
    if flat.shape[1] != 1:
        raise BadInput(f"{model}: input '{name}' has shape {list(rows.shape)}; expected [batch, 1]")
    return [decode_text(v, limits, model, name, cap_key) for v in flat[:, 0]]


def decode_request(model: str, inputs: dict, limits: dict) -> dict:
    """One request's inputs ({name: array with batch dim}) -> {name: list of decoded rows}, or BadInput.

    audio -> float32 arrays, image -> RGB PIL images, name/text -> str."""
    expected = MODEL_INPUTS[model]
    missing = [n for n in expected if n not in inputs]
    if missing:
        raise BadInput(f"{model}: missing input(s) {missing}; this model takes {list(expected)}")
    out = {}
    for name in expected:
        value = inputs[name]
        if name == "audio":
            rows = _rows(np.asarray(value), model, name)
            out[name] = [check_audio(r, limits, model) for r in rows]
        elif name == "image":
            rows = _rows(np.asarray(value), model, name)
            out[name] = [decode_image(r, limits, model) for r in rows]
        elif name == "name":
            out[name] = _text_rows(value, limits, model, name, "name_max_chars")
        elif name == "text":
            out[name] = _text_rows(value, limits, model, name, "text_max_chars")
    sizes = {len(v) for v in out.values()}
    if len(sizes) > 1:
        raise BadInput(f"{model}: inputs have different batch sizes {[len(v) for v in out.values()]}")
    return out
