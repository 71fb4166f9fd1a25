"""evaluate + score: DNSMOS, PESQ and ASR-CER of the synthesized held-out sentences and of copy-synthesis.

evaluate (stage): trains/reuses the ASR judge (tasks/tts/asr_judge.py), then scores in ITS OWN PROCESS
(`python -m tasks.tts.evaluate RUN_DIR [--judge MODEL]`): speechmos imports onnxruntime, which must never
be loaded into a training process. Per-clip scores go to eval/scores.jsonl.
score (stage): averages them into metrics.json, draws target-vs-predicted mels, writes report_assets.json.

Metrics (on resampled 16 kHz copies, as DNSMOS and wide-band PESQ require, except the band ratio):
- dnsmos_ovrl/sig/bak: DNSMOS P.835 (speechmos) of the synthesis; dnsmos_ref_ovrl: of the recordings.
- pesq_wb: wide-band PESQ of the synthesis against the held-out recording of the same sentence. Their
  lengths differ, so they are aligned first (evaluate.pesq_alignment, named in metrics.json as
  pesq_alignment): `trim` = edge silence trimmed from both, synthesis padded/cut to the reference length;
  `stretch` = trimmed, then the synthesis time-stretched (phase vocoder, pitch kept) to the reference length.
- copy_*: the vocoder on the recording's ground-truth mel, scored the same way (no alignment needed):
  proves mel and vocoder settings match; it bounds what FastPitch can reach with this vocoder.
- high_band_ratio_8k: energy share above 8 kHz of the synthesis relative to the recording's, at their native
  rates (per clip in scores.jsonl, mean in metrics.json; copy_high_band_ratio_8k for copy-synthesis): what a
  44.1 kHz listener hears and the 16 kHz metrics cannot (a resampled 22.05 kHz model is empty above 11 kHz).
- asr_cer: CER of the judge on the synthesis (punctuation removed); asr_cer_fixed: on the characters outside
  the name; name_exact_rate: share of sentences whose name is recognised exactly; asr_cer_reference: the
  judge on the real recordings (its own error floor).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hackathon.core.atomic import read_jsonl
from hackathon.core.errors import HackathonError
from hackathon.core.text import align_errors, corpus_rate, spoken_chars

EVAL_RATE = 16000
NAME_PATTERN = re.compile(r"^[^，,]+[，,](?P<name>[^，,。]+)[，,]")  # "<greeting>，<name>，..." (the demo sentence)
ALIGNMENTS = ("trim", "stretch")
ASR_KEYS = ("asr_cer", "asr_cer_fixed", "name_exact_rate", "asr_reference_cer", "asr_reference_cer_fixed",
            "reference_name_exact_rate")
STRETCH_TOLERANCE = 0.02
HIGH_BAND_HZ = 8000.0  # energy above this is what 16 kHz metrics (DNSMOS, PESQ-WB) cannot hear
MIN_REFERENCE_BAND = 1e-6  # below this share the reference has no high band (FFT leakage only): no ratio  # below 2 % length difference the phase vocoder would only add artefacts


# ---------------------------------------------------------------- audio metrics

def to_eval_rate(audio: np.ndarray, sr: int) -> np.ndarray:
    from data_tools.audio import resample

    return np.clip(resample(audio.astype(np.float32), sr, EVAL_RATE), -1.0, 1.0).astype(np.float32)


def dnsmos(audio16: np.ndarray) -> dict:
    """DNSMOS P.835 (sig, bak, ovrl) of a 16 kHz clip. speechmos tries a telemetry DNS lookup first;
    offline it fails harmlessly."""
    from speechmos import dnsmos as speechmos_dnsmos

    scores = speechmos_dnsmos.run(np.clip(audio16, -1.0, 1.0), EVAL_RATE)
    return {"ovrl": float(scores["ovrl_mos"]), "sig": float(scores["sig_mos"]), "bak": float(scores["bak_mos"])}


def trim_edges(audio16: np.ndarray, top_db: float = 35.0) -> np.ndarray:
    import librosa

    trimmed, _ = librosa.effects.trim(audio16, top_db=top_db, frame_length=512, hop_length=128)
    return trimmed if trimmed.size else audio16


def align_lengths(reference16: np.ndarray, degraded16: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Make the synthesis comparable sample-for-sample with the reference (see module docstring)."""
    import librosa

    if method not in ALIGNMENTS:
        raise HackathonError(f"evaluate.pesq_alignment={method!r} is not known.", fix=f"Use one of {ALIGNMENTS}.")
    ref, deg = trim_edges(reference16), trim_edges(degraded16)
    if method == "stretch" and len(deg) > 0 and len(ref) > 0 and abs(len(deg) / len(ref) - 1) > STRETCH_TOLERANCE:
        deg = librosa.effects.time_stretch(deg, rate=len(deg) / len(ref))
    deg = deg[:len(ref)] if len(deg) >= len(ref) else np.pad(deg, (0, len(ref) - len(deg)))
    return ref, deg.astype(np.float32)


def band_energy_fraction(audio: np.ndarray, sr: int, cutoff_hz: float = HIGH_BAND_HZ) -> float:
    """Share of the clip's spectral energy above `cutoff_hz` (0 when the rate cannot carry it)."""
    if sr / 2 <= cutoff_hz or audio.size == 0:
        return 0.0
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(audio.size, d=1.0 / sr)
    total = float(power.sum())
    return float(power[freqs > cutoff_hz].sum() / total) if total > 0 else 0.0


def high_band_ratio(synth: np.ndarray, synth_sr: int, reference: np.ndarray, reference_sr: int,
                    cutoff_hz: float = HIGH_BAND_HZ) -> float | None:
    """Energy share above `cutoff_hz` of the synthesis relative to the reference's, each at its NATIVE rate:
    1.0 = as bright as the recording, ~0 = the band the 44.1 kHz judges hear is empty (e.g. a resampled
    22.05 kHz model has nothing above 11.025 kHz). None when the reference has no energy there."""
    ref = band_energy_fraction(reference, reference_sr, cutoff_hz)
    return round(band_energy_fraction(synth, synth_sr, cutoff_hz) / ref, 4) if ref > MIN_REFERENCE_BAND else None


def pesq_wb(reference16: np.ndarray, degraded16: np.ndarray) -> float:
    """Wide-band PESQ (ITU-T P.862.2) at 16 kHz of two equally long clips."""
    from pesq import pesq

    n = min(len(reference16), len(degraded16))
    return float(pesq(EVAL_RATE, reference16[:n], degraded16[:n], "wb"))


# ---------------------------------------------------------------- text metrics

def name_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the name inside spoken_chars(text), for sentences shaped like the demo's."""
    m = NAME_PATTERN.match(text)
    if not m:
        return None
    start = len(spoken_chars(text[:m.start("name")]))
    return start, start + len(spoken_chars(m.group("name")))


def text_scores(reference: str, hypothesis: str) -> dict:
    ref, hyp = spoken_chars(reference), spoken_chars(hypothesis)
    errors, aligned = align_errors(ref, hyp)
    out = {"hyp": hyp, "ref": ref, "errors": int(sum(errors)), "ref_chars": len(ref)}
    span = name_span(reference)
    if span is not None:
        s, e = span
        out["fixed_errors"] = int(sum(errors[:s]) + sum(errors[e:]))
        out["fixed_chars"] = len(ref) - (e - s)
        out["name"] = ref[s:e]
        out["name_heard"] = "".join(aligned[s:e])
        out["name_exact"] = bool(sum(errors[s:e]) == 0)
    return out


# ---------------------------------------------------------------- the scoring process

def score_clips(run_dir: Path, judge: Path | None, alignment: str) -> list[dict]:
    from data_tools.audio import read_audio, to_mono
    from hackathon.core.atomic import atomic_write_jsonl

    index = read_jsonl(run_dir / "synth" / "index.jsonl")
    rows = []
    for item in index:
        audio, native = {}, {}
        for kind, path in (("synth", run_dir / item["synth"]), ("copy", run_dir / item["copy"]),
                           ("ref", Path(item["reference"]))):
            samples, sr = read_audio(path)
            native[kind] = (to_mono(samples), sr)
            audio[kind] = to_eval_rate(native[kind][0], sr)  # resampled copy for DNSMOS/PESQ (16 kHz only)
        ref_aligned, synth_aligned = align_lengths(audio["ref"], audio["synth"], alignment)
        n = min(len(audio["ref"]), len(audio["copy"]))
        rows.append({"id": item["id"], "text": item["text"],
                     "dnsmos": dnsmos(audio["synth"]), "copy_dnsmos": dnsmos(audio["copy"]),
                     "ref_dnsmos": dnsmos(audio["ref"]),
                     "pesq_wb": pesq_wb(ref_aligned, synth_aligned),
                     "copy_pesq_wb": pesq_wb(audio["ref"][:n], audio["copy"][:n]),
                     "sample_rate": native["synth"][1],
                     "high_band_ratio": high_band_ratio(*native["synth"], *native["ref"]),
                     "copy_high_band_ratio": high_band_ratio(*native["copy"], *native["ref"])})
    if judge is not None:
        add_asr_scores(rows, index, run_dir, judge)
    atomic_write_jsonl(run_dir / "eval" / "scores.jsonl", rows)
    return rows


def add_asr_scores(rows: list[dict], index: list[dict], run_dir: Path, judge: Path) -> None:
    from tasks.asr.model import restore_model
    from tasks.asr.transcribe import transcribe_items

    model = restore_model(judge)
    for kind, key in (("synth", "asr"), ("ref", "asr_reference")):
        items = [{"audio_filepath": str(run_dir / it["synth"]) if kind == "synth" else it["reference"]} for it in index]
        results, failed = transcribe_items(model, items)
        if failed:
            raise HackathonError(f"The ASR judge could not read {failed[0]['audio_filepath']}: {failed[0]['error']}")
        for row, result in zip(rows, results):
            row[key] = text_scores(row["text"], result["pred_text"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score a TTS run's synthesis (own process: onnxruntime).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--judge", type=Path, default=None)
    parser.add_argument("--alignment", default="trim", choices=ALIGNMENTS)
    args = parser.parse_args(argv)
    t0 = time.time()
    rows = score_clips(args.run_dir, args.judge, args.alignment)
    print(json.dumps({"clips": len(rows), "seconds": round(time.time() - t0, 1)}))


# ---------------------------------------------------------------- stages

def evaluate_stage(ctx) -> None:
    judge = None
    if ctx.cfg.evaluate.asr_judge:
        from tasks.tts.asr_judge import ensure_asr_judge

        judge = ensure_asr_judge(ctx)
    log_path = ctx.path("logs", "evaluate.log")
    cmd = [sys.executable, "-m", "tasks.tts.evaluate", str(ctx.run_dir),
           "--alignment", str(ctx.cfg.evaluate.pesq_alignment)] + (["--judge", str(judge)] if judge else [])
    with open(log_path, "a", encoding="utf-8") as log_file:
        proc = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise HackathonError(f"Scoring failed (exit {proc.returncode}): {' | '.join(tail)}",
                             fix=f"See {log_path}.")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def aggregate(rows: list[dict]) -> dict:
    metrics = {
        "dnsmos_ovrl": _mean(r["dnsmos"]["ovrl"] for r in rows),
        "dnsmos_sig": _mean(r["dnsmos"]["sig"] for r in rows),
        "dnsmos_bak": _mean(r["dnsmos"]["bak"] for r in rows),
        "pesq_wb": _mean(r["pesq_wb"] for r in rows),
        "copy_dnsmos_ovrl": _mean(r["copy_dnsmos"]["ovrl"] for r in rows),
        "copy_pesq_wb": _mean(r["copy_pesq_wb"] for r in rows),
        "dnsmos_ref_ovrl": _mean(r["ref_dnsmos"]["ovrl"] for r in rows),
        "high_band_ratio_8k": _mean(r.get("high_band_ratio") for r in rows),
        "copy_high_band_ratio_8k": _mean(r.get("copy_high_band_ratio") for r in rows),
        "synth_sample_rate": rows[0].get("sample_rate") if rows else None,
        "n_sentences": len(rows),
    }
    for key, prefix in (("asr", "asr"), ("asr_reference", "asr_reference")):
        scored = [r[key] for r in rows if key in r]
        if not scored:
            continue
        metrics[f"{prefix}_cer"] = round(corpus_rate(scored, "errors", "ref_chars") or 0.0, 4)
        named = [s for s in scored if "name" in s]
        if named:
            metrics[f"{prefix}_cer_fixed"] = round(corpus_rate(named, "fixed_errors", "fixed_chars") or 0.0, 4)
            metrics["name_exact_rate" if prefix == "asr" else "reference_name_exact_rate"] = round(
                sum(s["name_exact"] for s in named) / len(named), 4)
    return metrics


def save_mel_image(target: np.ndarray, predicted: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hackathon.core.atomic import atomic_path

    fig, axes = plt.subplots(2, 1, figsize=(8, 4.5), sharex=False)
    for ax, mel, label in ((axes[0], target, "target (recording)"), (axes[1], predicted, "predicted (FastPitch)")):
        ax.imshow(mel, origin="lower", aspect="auto", interpolation="none", vmin=-11.5, vmax=max(1.0, float(mel.max())))
        ax.set_ylabel("mel band")
        ax.set_title(label, fontsize=9)
    axes[1].set_xlabel("frame (11.6 ms)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def score_stage(ctx) -> None:
    from hackathon.core.report import add_report_assets

    rows = read_jsonl(ctx.path("eval", "scores.jsonl"))
    if not rows:
        raise HackathonError(f"{ctx.path('eval', 'scores.jsonl')} is empty.", fix="Re-run: hackathon run tts --from evaluate")
    metrics = {**dict.fromkeys(ASR_KEYS), **aggregate(rows), "vocoder": str(ctx.cfg.vocoder),
               "pesq_alignment": str(ctx.cfg.evaluate.pesq_alignment)}  # None: not measured in this run
    ctx.write_metrics(metrics)
    index = {item["id"]: item for item in read_jsonl(ctx.path("synth", "index.jsonl"))}
    assets = {"images": [], "audio": [], "tables": []}
    for n, row in enumerate(rows):
        item = index[row["id"]]
        assets["audio"].append({"path": item["synth"], "caption": f"{row['id']}: FastPitch + {ctx.cfg.vocoder}",
                                "text": row["text"]})
        if n < 3:
            image = f"eval/mel_{row['id']}.png"
            save_mel_image(np.load(ctx.path(item["target_mel"])), np.load(ctx.path(item["pred_mel"])),
                           f"{row['id']} (names unseen in training)", ctx.path(image))  # ASCII: no CJK font needed
            assets["images"].append({"path": image, "caption": f"{row['id']}: target vs predicted mel"})
            assets["audio"].append({"path": item["copy"], "caption": f"{row['id']}: copy-synthesis ({ctx.cfg.vocoder} "
                                                                     "on the recording's mel)", "text": row["text"]})
            reference = Path(item["reference"])
            if reference.is_relative_to(ctx.run_dir):  # the prepare stage's cleaned copy, inside the run dir
                assets["audio"].append({"path": str(reference.relative_to(ctx.run_dir)),
                                        "caption": f"{row['id']}: held-out recording", "text": row["text"]})
    assets["tables"].append({"title": "Held-out sentences (names unseen in training)", "rows": [_table_row(r) for r in rows]})
    headline = [{"key": "dnsmos_ovrl", "label": "DNSMOS OVRL", "better": "higher"},
                {"key": "pesq_wb", "label": "PESQ WB", "better": "higher"},
                {"key": "asr_cer", "label": "ASR CER of the speech", "better": "lower"},
                {"key": "name_exact_rate", "label": "names heard exactly", "better": "higher"}]
    add_report_assets(ctx.run_dir, stage="score", headline=headline, **assets)  # the export stage's parity table stays
    ctx.log.info("tts metrics: %s", metrics)


def _table_row(row: dict) -> dict:
    out = {"id": row["id"], "text": row["text"], "dnsmos_ovrl": round(row["dnsmos"]["ovrl"], 2),
           "pesq_wb": round(row["pesq_wb"], 2), "copy_dnsmos_ovrl": round(row["copy_dnsmos"]["ovrl"], 2),
           "copy_pesq_wb": round(row["copy_pesq_wb"], 2), "high_band_ratio_8k": row.get("high_band_ratio")}
    if "asr" in row:
        out.update(asr_heard=row["asr"]["hyp"], asr_errors=row["asr"]["errors"],
                   name_exact=row["asr"].get("name_exact"))
    return out


if __name__ == "__main__":
    main()
