"""Dataset report for an audio manifest: one self-contained HTML page (images and audio embedded).

Counts, hours, duration histogram, character coverage, the inputs prepare-audio rejected, and for a
sample of clips the waveform, spectrogram and mel spectrogram with an audio player. Mail it to the
team or open it offline: nothing is linked.

    write_audio_report(manifest, out_html=None, prepare_report=None, samples=6, seed=0) -> Path

`clip_figure_png(audio, sr, title)` is reusable by the pipelines' report assets (e.g. TTS output mels).
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path

import numpy as np

from data_tools.audio import read_audio, to_mono
from data_tools.manifest import ManifestEntry, read_manifest
from hackathon.core.atomic import atomic_write_text, read_json
from hackathon.core.errors import HackathonError

N_FFT = 1024
HOP = 256
N_MELS = 80  # what NeMo's FastPitch/HiFi-GAN and most ASR front-ends use
MAX_PLAYER_SECONDS = 20.0


# ---------------------------------------------------------------- spectral features (numpy only)

def stft_power(audio: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """|STFT|^2 with a Hann window, shape (n_fft // 2 + 1, frames)."""
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = 1 + (len(audio) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(audio[index] * np.hanning(n_fft)[None, :], axis=1)
    return (np.abs(spectrum) ** 2).T


def mel_filterbank(sr: int, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_mels, n_fft // 2 + 1)."""
    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * (10 ** (np.asarray(mel) / 2595.0) - 1.0)

    fmax = fmax or sr / 2
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins_hz = np.linspace(0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz[None, :] - lower) / np.maximum(centre - lower, 1e-10)
    falling = (upper - bins_hz[None, :]) / np.maximum(upper - centre, 1e-10)
    return np.maximum(0.0, np.minimum(rising, falling))


def _db(power: np.ndarray) -> np.ndarray:
    db = 10 * np.log10(np.maximum(power, 1e-10))
    return np.maximum(db, db.max() - 80.0)  # 80 dB range, like librosa's power_to_db(top_db=80)


# ---------------------------------------------------------------- figures

def _subplots(*args, **kwargs):
    """plt.subplots on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def clip_figure_png(audio: np.ndarray, sr: int, title: str = "") -> bytes:
    """Waveform, linear spectrogram and mel spectrogram of one clip, stacked, as PNG bytes."""
    audio = to_mono(audio)
    power = stft_power(audio)
    seconds = len(audio) / sr
    fig, axes = _subplots(3, 1, figsize=(8, 6.5), sharex=True)
    axes[0].plot(np.arange(len(audio)) / sr, audio, linewidth=0.5)
    axes[0].set_ylabel("amplitude")
    axes[0].set_title(title, fontsize=9)
    axes[1].imshow(_db(power), origin="lower", aspect="auto", extent=(0, seconds, 0, sr / 2000), cmap="magma")
    axes[1].set_ylabel("kHz")
    axes[2].imshow(_db(mel_filterbank(sr) @ power), origin="lower", aspect="auto", extent=(0, seconds, 0, N_MELS),
                   cmap="magma")
    axes[2].set_ylabel("mel bin")
    axes[2].set_xlabel("seconds")
    return _png(fig)


def duration_histogram_png(durations: list[float]) -> bytes:
    fig, ax = _subplots(figsize=(7, 3))
    ax.hist(durations, bins=min(40, max(5, len(durations) // 5)), color="#4a7ab5")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("clips")
    return _png(fig)


# ---------------------------------------------------------------- statistics

def character_coverage(entries: list[ManifestEntry], top: int = 40) -> dict:
    """How often each character occurs: rare characters are what the model will get wrong."""
    counts = Counter(ch for e in entries for ch in e.text if not ch.isspace())
    return {"total_characters": sum(counts.values()), "distinct_characters": len(counts),
            "most_common": counts.most_common(top),
            "seen_once": sorted(ch for ch, n in counts.items() if n == 1)}


def summary_stats(entries: list[ManifestEntry]) -> dict:
    durations = [e.duration for e in entries]
    speakers = Counter(e.speaker for e in entries if e.speaker is not None)
    return {"clips": len(entries), "hours": round(sum(durations) / 3600, 4),
            "min_s": round(min(durations), 2), "median_s": round(float(np.median(durations)), 2),
            "max_s": round(max(durations), 2), "speakers": len(speakers),
            "clips_per_speaker": dict(sorted(speakers.items()))}


# ---------------------------------------------------------------- HTML

def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio[: int(MAX_PLAYER_SECONDS * sr)], -1, 1), sr, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in keys) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _sample_html(entries: list[ManifestEntry], samples: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(entries), size=min(samples, len(entries)), replace=False))
    parts = []
    for i in picks:
        entry = entries[i]
        try:
            audio, sr = read_audio(entry.audio_filepath)
        except HackathonError as exc:
            parts.append(f"<div class=clip><p class=bad>{html.escape(exc.message)}</p></div>")
            continue
        audio = to_mono(audio)
        title = f"{Path(entry.audio_filepath).name}  {sr} Hz  {len(audio) / sr:.2f} s"
        parts.append(
            f"<div class=clip><p><b>{html.escape(entry.text)}</b><br><small>{html.escape(entry.audio_filepath)}"
            f"{' · speaker ' + html.escape(entry.speaker) if entry.speaker else ''}</small></p>"
            f"<audio controls src='{_data_uri(_wav_bytes(audio, sr), 'audio/wav')}'></audio><br>"
            f"<img src='{_data_uri(clip_figure_png(audio, sr, title), 'image/png')}'></div>")
    return "\n".join(parts)


_STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.clip{border-top:1px solid #ddd;padding:1em 0}.bad{color:#b00}img{max-width:100%}"""


def _find_prepare_report(manifest: Path, prepare_report: Path | None) -> dict:
    path = prepare_report or manifest.parent / "report.json"
    report = read_json(path) or {}
    return report if report.get("tool") == "prepare-audio" else {}


def render_audio_report(manifest: str | Path, prepare_report: str | Path | None = None, samples: int = 6,
                        seed: int = 0) -> str:
    manifest = Path(manifest)
    entries = read_manifest(manifest)
    if not entries:
        raise HackathonError(f"{manifest}: manifest is empty, nothing to report", fix="check the prepare step")
    stats = summary_stats(entries)
    coverage = character_coverage(entries)
    prepared = _find_prepare_report(manifest, Path(prepare_report) if prepare_report else None)
    rejected = [{k: r.get(k, "") for k in ("kind", "path", "reason", "fix")} for r in prepared.get("rejected", [])]
    flagged = [{"path": f["path"], "flags": "; ".join(f["flags"])} for f in prepared.get("flagged", [])]
    speakers = stats.pop("clips_per_speaker")
    hist = _data_uri(duration_histogram_png([e.duration for e in entries]), "image/png")
    common = " ".join(f"{html.escape(ch)}×{n}" for ch, n in coverage["most_common"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Audio dataset: {html.escape(manifest.name)}</title>
<style>{_STYLE}</style></head><body>
<h1>Audio dataset report</h1><p>{html.escape(str(manifest.resolve()))}</p>
<h2>Counts</h2>{_table([stats])}
{_table([{"speaker": k, "clips": v} for k, v in speakers.items()]) if speakers else ""}
<h2>Durations</h2><img src="{hist}">
<h2>Character coverage</h2>
<p>{coverage['total_characters']} characters, {coverage['distinct_characters']} distinct.</p>
<p>Most common: {common}</p>
<p>Seen only once ({len(coverage['seen_once'])}): {html.escape(' '.join(coverage['seen_once'])) or 'none'}</p>
<h2>Rejected inputs ({len(rejected)})</h2>{_table(rejected) if prepared else '<p>no prepare-audio report.json found next to the manifest</p>'}
<h2>Flagged clips ({len(flagged)})</h2>{_table(flagged)}
{''.join(f'<p>{html.escape(n)}</p>' for n in prepared.get('notes', []))}
<h2>Sample clips</h2>{_sample_html(entries, samples, seed)}
</body></html>
"""


def write_audio_report(manifest: str | Path, out_html: str | Path | None = None,
                       prepare_report: str | Path | None = None, samples: int = 6, seed: int = 0) -> Path:
    """Write the HTML report (default: <manifest folder>/<manifest stem>_report.html)."""
    manifest = Path(manifest)
    out_html = Path(out_html) if out_html else manifest.parent / f"{manifest.stem}_report.html"
    return atomic_write_text(out_html, render_audio_report(manifest, prepare_report, samples, seed))
