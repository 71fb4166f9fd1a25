"""Embedded demo speech: Mandarin community-gate phrases spoken by espeak-ng, with NeMo manifests.

The demo is what `hackathon run asr|tts` trains on when no data is given, so it is small, deterministic
for a seed, and generated in seconds (espeak calls run in parallel threads; each is a subprocess).

- ASR: ~9 short gate phrases x 12 voice variants x a few speed/pitch renditions, optional noise, 16 kHz
  mono. Split by voice: val/test voices never speak in train (so CER measures unseen speakers).
- TTS: ONE voice reading "<greeting>，<name>，欢迎回家，二维码有效请您通过。" for >= 30 names and four
  greetings, at 22.05 kHz. Test (and val) sentences use names that never appear in training.

espeak-ng must use the voice `cmn-latn-pinyin` (reads hanzi correctly); plain `cmn` mispronounces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.audio import read_audio, resample, write_wav
from data_tools.manifest import ManifestEntry, write_manifest
from hackathon.core.atomic import atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.progress import track

# Bump when the generated audio or manifests change, so cached demo data is regenerated.
GENERATOR_VERSION = 1
STAMP_NAME = "synth_stamp.json"
SPLITS = ("train", "val", "test")
ESPEAK_VOICE = "cmn-latn-pinyin"

ASR_PHRASES = (
    "你好大白请让我进入小区",
    "请帮我开一下门",
    "我是这里的业主",
    "我来送快递",
    "我住在三号楼",
    "请问物业在哪里",
    "我忘记带门禁卡了",
    "外卖放在门口就好",
    "谢谢你大白",
)
# 12 voice variants; val/test voices are held out of training entirely.
ASR_VOICE_SPLITS = {
    "train": ("f1", "f2", "f3", "m1", "m2", "m3", "m4", "m5"),
    "val": ("f4", "m6"),
    "test": ("f5", "m7"),
}
ASR_RATE = 16000

TTS_VOICE = "f2"
TTS_RATE = 22050
TTS_GREETINGS = ("您好", "上午好", "中午好", "下午好")
TTS_TEMPLATE = "{greeting}，{name}，欢迎回家，二维码有效请您通过。"
TTS_NAMES = (
    "张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄丽", "周杰", "吴敏",
    "徐强", "孙悦", "马超", "朱琳", "胡军", "郭涛", "何平", "高峰", "林欣", "罗斌",
    "郑爽", "梁晨", "谢婷", "宋佳", "唐亮", "韩雪", "冯刚", "董明", "程浩", "曹颖",
    "张志强", "李秀英", "王建国", "刘德明", "陈美玲", "杨晓东",
)
TTS_HELD_OUT = {"val": 4, "test": 6}  # names per split that never occur in train


@dataclass(frozen=True)
class Utterance:
    """One clip to render: what to say, with which espeak settings, where it goes."""

    split: str
    name: str  # file stem
    text: str
    voice: str
    speed: int  # espeak words per minute
    pitch: int  # espeak 0-99
    gain: float
    noise_snr_db: float | None  # None = clean
    speaker: str | None


def _asr_utterances(seed: int, renditions: int, noise: bool) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    utterances = []
    for split in SPLITS:
        for voice in ASR_VOICE_SPLITS[split]:
            for p_idx, phrase in enumerate(ASR_PHRASES):
                for r in range(renditions):
                    noisy = noise and rng.random() < 0.5
                    utterances.append(Utterance(
                        split=split, name=f"{voice}_p{p_idx:02d}_r{r}", text=phrase, voice=voice,
                        speed=int(rng.integers(135, 196)), pitch=int(rng.integers(30, 71)),
                        gain=float(rng.uniform(0.5, 0.95)),
                        noise_snr_db=float(rng.uniform(15, 35)) if noisy else None, speaker=voice))
    return utterances


def _tts_name_splits(seed: int) -> dict[str, list[str]]:
    names = list(TTS_NAMES)
    np.random.default_rng(seed).shuffle(names)
    n_test, n_val = TTS_HELD_OUT["test"], TTS_HELD_OUT["val"]
    return {"test": names[:n_test], "val": names[n_test:n_test + n_val], "train": names[n_test + n_val:]}


def _tts_utterances(seed: int) -> list[Utterance]:
    utterances = []
    for split, names in _tts_name_splits(seed).items():
        for name in names:
            for g_idx, greeting in enumerate(TTS_GREETINGS):
                utterances.append(Utterance(
                    split=split, name=f"{TTS_NAMES.index(name):02d}_g{g_idx}",
                    text=TTS_TEMPLATE.format(greeting=greeting, name=name), voice=TTS_VOICE,
                    speed=150, pitch=50, gain=0.9, noise_snr_db=None, speaker=None))
    return utterances


def _espeak(text: str, voice: str, speed: int, pitch: int, wav_path: Path) -> None:
    cmd = ["espeak-ng", "-v", f"{ESPEAK_VOICE}+{voice}", "-s", str(speed), "-p", str(pitch),
           "-w", str(wav_path), text]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise HackathonError("espeak-ng is not installed (needed for the demo speech)",
                             fix="apt-get install espeak-ng") from exc
    if proc.returncode != 0 or not wav_path.exists() or wav_path.stat().st_size <= 44:
        raise HackathonError(f"espeak-ng failed for voice {ESPEAK_VOICE}+{voice} on {text!r}: {proc.stderr.strip()}",
                             fix="check `espeak-ng --voices=cmn` lists cmn-latn-pinyin")


def _add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    signal_power = float(np.mean(audio ** 2)) or 1e-10
    noise = rng.standard_normal(len(audio)).astype(np.float32)
    noise *= np.sqrt(signal_power / (10 ** (snr_db / 10)))
    return audio + noise


def _render(utt: Utterance, index: int, seed: int, out_dir: Path, sample_rate: int, scratch: Path) -> ManifestEntry:
    raw = scratch / f"{utt.split}_{utt.name}.wav"
    _espeak(utt.text, utt.voice, utt.speed, utt.pitch, raw)
    audio, sr = read_audio(raw)
    audio = audio / (np.max(np.abs(audio)) or 1.0) * utt.gain
    if utt.noise_snr_db is not None:
        audio = _add_noise(audio, utt.noise_snr_db, np.random.default_rng([seed, index]))
    audio = resample(audio, sr, sample_rate)
    dst = out_dir / "wavs" / utt.split / f"{utt.name}.wav"
    write_wav(dst, audio, sample_rate)
    return ManifestEntry(audio_filepath=str(dst.resolve()), duration=len(audio) / sample_rate, text=utt.text,
                         speaker=utt.speaker)


def _guard_out_dir(out_dir: Path) -> None:
    """Never overwrite a folder the user filled: only an empty one or our own earlier output."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / STAMP_NAME).exists():
        raise HackathonError(f"{out_dir}: folder is not empty and was not made by synth-speech",
                             fix="pass --out with a new or empty folder")


def synth_speech(task: str, out_dir: str | Path, seed: int = 0, renditions: int = 3, noise: bool = True,
                 workers: int | None = None) -> dict:
    """Generate the demo corpus for `task` ("asr" or "tts") into out_dir; returns a summary dict.

    Writes wavs/<split>/*.wav and train_manifest.json, val_manifest.json, test_manifest.json (NeMo JSONL,
    absolute paths) plus synth_stamp.json (written last: its presence means the corpus is complete).
    """
    if task not in ("asr", "tts"):
        raise HackathonError(f"unknown task {task!r} for synth-speech", fix="use --task asr or --task tts")
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    _guard_out_dir(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # our own earlier (maybe half-finished) output: regenerate cleanly
    out_dir.mkdir(parents=True)
    # Claim the folder first: a run killed halfway leaves a stamp with complete=false, so the next run
    # knows the folder is ours to regenerate.
    atomic_write_json(out_dir / STAMP_NAME, {"complete": False, "params": _params(task, seed, renditions, noise)})
    sample_rate = ASR_RATE if task == "asr" else TTS_RATE
    utterances = _asr_utterances(seed, renditions, noise) if task == "asr" else _tts_utterances(seed)
    workers = workers or max(2, 2 * (os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="espeak-") as scratch, ThreadPoolExecutor(workers) as pool:
        entries = list(track(pool.map(lambda iu: _render(iu[1], iu[0], seed, out_dir, sample_rate, Path(scratch)),
                                      enumerate(utterances)), f"synthesize {task} demo speech", len(utterances),
                                unit="clip"))
    summary = {"task": task, "out_dir": str(out_dir), "seed": seed, "sample_rate": sample_rate,
               "generator_version": GENERATOR_VERSION, "manifests": {}, "counts": {}, "hours": {}}
    for split in SPLITS:
        split_entries = [e for e, u in zip(entries, utterances) if u.split == split]
        manifest = write_manifest(out_dir / f"{split}_manifest.json", split_entries)
        summary["manifests"][split] = str(manifest)
        summary["counts"][split] = len(split_entries)
        summary["hours"][split] = round(sum(e.duration for e in split_entries) / 3600, 4)
    if task == "tts":
        summary["names"] = _tts_name_splits(seed)
    else:
        summary["voices"] = {k: list(v) for k, v in ASR_VOICE_SPLITS.items()}
    summary["seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_json(out_dir / STAMP_NAME, {**summary, "complete": True,
                                             "params": _params(task, seed, renditions, noise)})
    return summary


def _params(task: str, seed: int, renditions: int, noise: bool) -> dict:
    """What the cached corpus depends on; a mismatch means regenerate."""
    return {"task": task, "seed": seed, "renditions": renditions, "noise": noise,
            "generator_version": GENERATOR_VERSION}


def ensure_demo_speech(task: str, seed: int = 0, renditions: int = 3, noise: bool = True) -> Path:
    """The cached demo corpus for `task` under hackathon.core.paths.demo_data_root()/<task>; generated once.

    A file lock makes concurrent runs (ASR tests + a TTS run) wait for one generator instead of racing.
    """
    from filelock import FileLock

    from hackathon.core.paths import demo_data_root

    out_dir = demo_data_root() / task
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(demo_data_root() / f".{task}.lock")):
        stamp = read_json(out_dir / STAMP_NAME) or {}
        if not stamp.get("complete") or stamp.get("params") != _params(task, seed, renditions, noise) or not all(
                (out_dir / f"{s}_manifest.json").exists() for s in SPLITS):
            synth_speech(task, out_dir, seed=seed, renditions=renditions, noise=noise)
    return out_dir
