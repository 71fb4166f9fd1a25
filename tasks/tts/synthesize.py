"""Text -> speech with a run's FastPitch and vocoder: the synthesize stage and `hackathon tts synthesize`.

Every sentence is checked first: a character without phonemes is an error naming it (NeMo would skip it
and say the rest), so a name never seen in training still comes out whole as long as its characters have
pinyin readings — which the dictionary built from pypinyin covers.

Stage output (synth/): test/<id>.wav (FastPitch + vocoder, the held-out sentences), copy/<id>.wav
(vocoder on the ground-truth mel of the same recording), <id>.pred.npy / <id>.target.npy mels, and
synth/index.jsonl tying each id to its text and reference recording.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hackathon.core.errors import HackathonError
from hackathon.core.progress import track


class Synthesizer:
    """FastPitch + vocoder of one run directory."""

    def __init__(self, run_dir: str | Path, vocoder: str | None = None):
        from omegaconf import OmegaConf

        from tasks.tts.fastpitch import load_fastpitch
        from tasks.tts.vocoder import MelSettings, load_vocoder

        self.run_dir = Path(run_dir)
        cfg_path = self.run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise HackathonError(f"{self.run_dir} is not a TTS run directory (no config.yaml).",
                                 fix="Pass --model with a directory made by `hackathon run tts`.")
        self.cfg = OmegaConf.load(cfg_path)
        self.vocoder_kind = vocoder or self.cfg.vocoder
        if self.vocoder_kind == "hifigan" and not self.cfg.hifigan.enabled:
            raise HackathonError(f"vocoder=hifigan but {self.run_dir} trained no HiFiGAN (hifigan.enabled is false).",
                                 fix="Use vocoder=griffin_lim, or run with hifigan.enabled=true.")
        self.model = load_fastpitch(self.run_dir)
        self.mel = MelSettings.from_fastpitch(self.model)
        if self.mel.sample_rate != int(self.cfg.data.sample_rate):
            raise HackathonError(f"{self.run_dir}: FastPitch works at {self.mel.sample_rate} Hz, the run's data at "
                                 f"{self.cfg.data.sample_rate} Hz.",
                                 fix="Re-run `hackathon run tts` with this config (fastpitch re-trains).")
        self.vocoder = load_vocoder(self.run_dir, self.vocoder_kind, self.mel, self.cfg.griffin_lim)

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    def check(self, text: str, where: str) -> None:
        from tasks.tts.g2p import check_text

        check_text(text, self.model.vocab, where)

    def mel_of_text(self, text: str, pace: float = 1.0) -> np.ndarray:
        import torch

        with torch.no_grad():
            tokens = self.model.parse(text, normalize=False)
            spec = self.model.generate_spectrogram(tokens=tokens, pace=pace)
        return spec[0].cpu().numpy()

    def mel_of_audio(self, audio: np.ndarray) -> np.ndarray:
        """Ground-truth mel with FastPitch's own preprocessor (what it was trained to predict)."""
        import torch

        with torch.no_grad():
            signal = torch.from_numpy(audio.astype(np.float32)).unsqueeze(0).to(self.model.device)
            spec, _ = self.model.preprocessor(input_signal=signal, length=torch.tensor([len(audio)], device=signal.device))
        return spec[0].cpu().numpy()

    def speak(self, text: str, where: str = "text", pace: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(waveform at self.sample_rate, predicted mel). Numbers, dates, letters are normalised first."""
        from tasks.tts.normalize import normalize_text

        spoken = normalize_text(text)
        self.check(spoken, where if spoken == text else f"{where} (normalised from {text!r})")
        mel = self.mel_of_text(spoken, pace)
        return self.vocoder(mel), mel


# ---------------------------------------------------------------- stage

def synthesize_stage(ctx) -> None:
    from data_tools.audio import read_audio, to_mono, write_wav
    from data_tools.manifest import read_manifest
    from hackathon.core.atomic import atomic_write_jsonl

    split = ctx.cfg.synthesize.split
    rows = [e.to_dict() for e in read_manifest(ctx.path("g2p", f"{split}.json"))]
    rows = evenly_spaced(rows, int(ctx.cfg.synthesize.max_sentences))
    if not rows:
        raise HackathonError(f"No {split} sentence to synthesize ({ctx.path('g2p', f'{split}.json')}).",
                             fix="Give the data a test split (names unseen in training).")
    synth = Synthesizer(ctx.run_dir)
    out = ctx.dir("synth")
    index, seconds, audio_seconds = [], 0.0, 0.0
    for i, row in enumerate(track(rows, "synthesize", unit="sentence")):
        clip_id = f"{i:03d}_{Path(row['audio_filepath']).stem}"  # unique even when basenames repeat
        t0 = time.time()
        audio, pred_mel = synth.speak(row["text"], where=f"{split} sentence {i}", pace=float(ctx.cfg.synthesize.pace))
        seconds += time.time() - t0
        audio_seconds += len(audio) / synth.sample_rate
        write_wav(out / "test" / f"{clip_id}.wav", audio, synth.sample_rate)
        reference, sr = read_audio(row["audio_filepath"])
        reference = to_mono(reference)
        if sr != synth.sample_rate:
            raise HackathonError(f"{row['audio_filepath']}: {sr} Hz, the model works at {synth.sample_rate} Hz",
                                 fix="Re-run the prepare stage (it converts every clip).")
        target_mel = synth.mel_of_audio(reference)
        write_wav(out / "copy" / f"{clip_id}.wav", synth.vocoder(target_mel), synth.sample_rate)
        np.save(out / f"{clip_id}.pred.npy", pred_mel)
        np.save(out / f"{clip_id}.target.npy", target_mel)
        index.append({"id": clip_id, "text": row["text"], "reference": row["audio_filepath"],
                      "synth": f"synth/test/{clip_id}.wav", "copy": f"synth/copy/{clip_id}.wav",
                      "pred_mel": f"synth/{clip_id}.pred.npy", "target_mel": f"synth/{clip_id}.target.npy"})
    atomic_write_jsonl(out / "index.jsonl", index)
    rtf = seconds / audio_seconds if audio_seconds else None
    ctx.record(sentences=len(index), vocoder=synth.vocoder_kind, real_time_factor=round(rtf, 3) if rtf else None)
    ctx.write_metrics({"vocoder": synth.vocoder_kind, "synth_real_time_factor": round(rtf, 3) if rtf else None})


def evenly_spaced(rows: list, limit: int) -> list:
    """At most `limit` rows spread over the whole list (0 = all): every held-out name stays represented."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    return [rows[round(i * (len(rows) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else rows[:1]


# ---------------------------------------------------------------- CLI

def newest_finished_run() -> Path:
    """The newest TTS run dir holding a trained FastPitch."""
    from hackathon.core.paths import runs_root

    root = runs_root() / "tts"
    runs = sorted((d for d in root.glob("*") if (d / "models" / "fastpitch.nemo").is_file()),
                  key=lambda d: (d / "models" / "fastpitch.nemo").stat().st_mtime, reverse=True) if root.is_dir() else []
    if not runs:
        raise HackathonError(f"No trained TTS model under {root}.",
                             fix="Run `hackathon run tts` first, or pass --model RUN_DIR.")
    return runs[0]


def _read_text_file(path: Path) -> list[tuple[int, str]]:
    """(line number in the file, sentence) for every non-blank line."""
    if not path.is_file():
        raise HackathonError(f"{path}: text file not found", fix="Pass --file with one sentence per line.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise HackathonError(f"{path}: not UTF-8 text", fix="Save it as UTF-8.") from exc
    return [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]


def _write_output(path: Path, audio: np.ndarray, sr: int, rate: int) -> Path:
    from data_tools.audio import resample, write_wav

    if path.exists():
        raise HackathonError(f"{path} already exists; not overwriting it.", fix="Choose another -o path or delete it.")
    if rate != sr:
        audio = resample(audio, sr, rate)
    return write_wav(path, np.clip(audio, -1.0, 1.0), rate)


GREETINGS_BY_HOUR = ((5, 11, "上午好"), (11, 13, "中午好"), (13, 18, "下午好"))  # [from, to) hours; else 晚上好
EVENING = "晚上好"
TEMPLATE_FIELDS = {"greeting", "name"}


def greeting_for(now=None) -> str:
    """上午好 5-11 h, 中午好 11-13 h, 下午好 13-18 h, 晚上好 otherwise (local time)."""
    import datetime as dt

    hour = (now or dt.datetime.now()).hour
    return next((g for lo, hi, g in GREETINGS_BY_HOUR if lo <= hour < hi), EVENING)


def fill_template(template: str, name: str, greeting: str) -> str:
    """`template` with {greeting} and {name} filled in; any other {field} is an error naming it."""
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise HackathonError(f"--template {template!r}: {exc}", fix="Use {greeting} and {name}; write {{ for a brace.") from exc
    unknown = fields - TEMPLATE_FIELDS
    if unknown or "name" not in fields:
        raise HackathonError(f"--template {template!r}: " + (f"unknown field(s) {sorted(unknown)}" if unknown else "no {name}"),
                             fix='e.g. --template "{greeting}，{name}，欢迎回家，二维码有效请您通过。"')
    return template.format(greeting=greeting, name=name)


def dry_run(text: str, model: Path | None = None) -> list[str]:
    """`tts synthesize --dry-run TEXT`: the normalised text and its phonemes, no model needed (with --model,
    that run's dictionary and G2P settings; else the demo spec's, dictionary built on the fly)."""
    import tempfile

    from omegaconf import OmegaConf

    from tasks.tts.g2p import check_text, make_tokenizer, phonemes_of, write_pinyin_dict
    from tasks.tts.normalize import normalize_text

    spoken = normalize_text(text)
    with tempfile.TemporaryDirectory(prefix="tts-dry-run-") as tmp:
        if model is not None:
            g2p_cfg = _run_config(Path(model)).g2p
            dict_path = Path(model) / "g2p" / "pinyin_dict.txt"
        else:
            from hackathon.core.config import load_config

            g2p_cfg, dict_path = load_config("tts").g2p, write_pinyin_dict(Path(tmp) / "pinyin_dict.txt")
        tokenizer = make_tokenizer(dict_path, OmegaConf.create(OmegaConf.to_container(g2p_cfg)))
        check_text(spoken, tokenizer, "the sentence" if spoken == text else f"the sentence (normalised from {text!r})")
        phonemes = [p for p in phonemes_of(spoken, tokenizer) if p.strip()]
    return [f"text:       {text}", f"normalised: {spoken}", f"phonemes:   {' '.join(phonemes)}"]


def _run_config(run_dir: Path):
    from omegaconf import OmegaConf

    if not (run_dir / "config.yaml").is_file():
        raise HackathonError(f"{run_dir} is not a TTS run directory (no config.yaml).",
                             fix="Pass --model with a directory made by `hackathon run tts`.")
    return OmegaConf.load(run_dir / "config.yaml")


def _write_index_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from hackathon.core.atomic import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["line", "name", "text", "wav", "status", "error"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def synthesize_cli(text: str | None, out: Path | None, model: Path | None = None, text_file: Path | None = None,
                   rate: int | None = None, vocoder: str | None = None, template: str | None = None,
                   greeting: str | None = None, dry: bool = False) -> list[str]:
    """`hackathon tts synthesize`. One sentence -> `out` (a .wav); --file -> `out` is a folder with one wav per
    non-blank line (<line number>.wav: 0001.wav, ...), index.csv (line, name, text, wav, status, error) and
    synthesis_report.json listing the lines that could not be spoken (the others are still written).
    --template: each line (or TEXT) is a name put into the template with {greeting} (--greeting, or by the
    time of day). --dry-run: print the normalised text and phonemes only. Returns messages."""
    from hackathon.core.atomic import atomic_write_json

    if (text is None) == (text_file is None):
        raise HackathonError("Give either a sentence or --file (not both, not neither).",
                             fix='hackathon tts synthesize "您好，张三，欢迎回家。" -o out.wav')
    greeting = greeting or greeting_for()
    as_sentence = (lambda name: fill_template(template, name, greeting)) if template else (lambda line: line)
    if dry:
        if text is None:
            raise HackathonError("--dry-run takes a sentence, not --file.", fix='hackathon tts synthesize --dry-run "3号楼"')
        return dry_run(as_sentence(text), model)
    if out is None:
        raise HackathonError("No output given.", fix="Pass -o OUT.wav (with --file: -o OUT_DIR), or --dry-run.")
    if template:
        fill_template(template, "名字", greeting)  # a bad template fails before the model loads
    run_dir = Path(model) if model else newest_finished_run()
    synth = Synthesizer(run_dir, vocoder=vocoder)
    rate = int(rate or synth.cfg.synthesize.output_rate or synth.sample_rate)
    if text is not None:
        audio, _ = synth.speak(as_sentence(text), where="the sentence")
        path = _write_output(Path(out), audio, synth.sample_rate, rate)
        how = "native" if rate == synth.sample_rate else f"resampled from the model's {synth.sample_rate} Hz"
        return [f"wrote {path} ({len(audio) / synth.sample_rate:.2f} s, {rate} Hz {how}, model {run_dir}, "
                f"{synth.vocoder_kind})"]
    out_dir = Path(out)
    if out_dir.suffix.lower() == ".wav":
        raise HackathonError(f"With --file, -o is a folder (got {out_dir}).", fix="Pass -o OUT_DIR.")
    lines = _read_text_file(Path(text_file))
    report = {"model": str(run_dir), "vocoder": synth.vocoder_kind, "rate": rate, "model_rate": synth.sample_rate,
              "template": template, "greeting": greeting if template else None, "written": [], "failed": []}
    index = []
    for i, line in lines:
        target = out_dir / f"{i:04d}.wav"  # named by line number in the file
        sentence = as_sentence(line)
        row = {"line": i, "name": line if template else "", "text": sentence, "wav": "", "status": "ok", "error": ""}
        try:
            audio, _ = synth.speak(sentence, where=f"{text_file}:{i}")
            _write_output(target, audio, synth.sample_rate, rate)
            report["written"].append({"line": i, "text": sentence, "path": str(target)})
            row["wav"] = target.name
        except HackathonError as exc:
            report["failed"].append({"line": i, "text": sentence, "error": exc.message})
            row.update(status="failed", error=exc.message)
        index.append(row)
    atomic_write_json(out_dir / "synthesis_report.json", report)
    _write_index_csv(out_dir / "index.csv", index)
    messages = [f"wrote {len(report['written'])} of {len(lines)} sentences to {out_dir} ({rate} Hz), index {out_dir / 'index.csv'}"]
    messages += [f"line {f['line']} skipped: {f['error']}" for f in report["failed"]]
    return messages
