"""In-process TTS from a run's ONNX export: what the export check measures and what `hackathon serve` runs.

Reads only <run>/export/ (written by tasks/tts/export.py) and <run>/config.yaml:
- fastpitch.onnx: NeMo's own FastPitch export (inputs `text` token ids [1, T], `pitch` shift [1, T],
  `pace` [1, T]; output `spect` log-mel [1, n_mels, frames] first);
- hifigan.onnx (when the run trained one): NeMo's HiFiGAN export, `spec` -> `audio`;
- tts_export.yaml: the tokenizer config (NeMo ChineseG2p + ChinesePhonemesTokenizer over the exported
  pinyin_dict.txt), its token list, the mel settings and the vocoder the run uses.
Text goes through the same check as `hackathon tts synthesize` (tasks/tts/g2p.py: a character without
phonemes is an error naming it) and the same tokenizer the model was trained with; Griffin-Lim stays
numpy (tasks/tts/vocoder.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hackathon.core.errors import HackathonError

EXPORT_DIR = "export"
FASTPITCH_ONNX = "fastpitch.onnx"
HIFIGAN_ONNX = "hifigan.onnx"
SETTINGS = "tts_export.yaml"
DICT_NAME = "pinyin_dict.txt"
EXPORT_FIX = "Run `hackathon run tts --only export` on that run dir, or pick a finished TTS run."


def make_tokenizer(tokenizer_cfg, dict_path: Path):
    """The exported tokenizer config instantiated over the exported dictionary (as FastPitch builds it)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(OmegaConf.to_container(tokenizer_cfg, resolve=True))
    g2p_kwargs = {"phoneme_dict": str(dict_path)} if "phoneme_dict" in cfg.get("g2p", {}) else {}
    g2p = instantiate(cfg.g2p, **g2p_kwargs) if "g2p" in cfg else None
    return instantiate(cfg, g2p=g2p) if g2p is not None else instantiate(cfg)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids exactly as FastPitchModel.parse(text, normalize=False) makes them (phonemes only)."""
    import contextlib

    mode = tokenizer.set_phone_prob(prob=1.0) if hasattr(tokenizer, "set_phone_prob") else contextlib.nullcontext()
    with mode:
        return list(tokenizer.encode(text))


class TtsPredictor:
    """`synthesize(text) -> float32 waveform at .sample_rate` with the exported FastPitch (+ HiFiGAN)."""

    def __init__(self, export_dir: Path, settings, tokenizer, fastpitch, vocoder_kind: str, hifigan=None,
                 griffin_lim_cfg=None, pace: float = 1.0):
        from tasks.tts.vocoder import MelSettings

        self.export_dir = export_dir
        self.settings = settings
        self.tokenizer = tokenizer
        self.fastpitch = fastpitch
        self.hifigan = hifigan
        self.vocoder_kind = vocoder_kind
        self.griffin_lim_cfg = griffin_lim_cfg
        self.pace = float(pace)
        self.mel = MelSettings(**settings.mel)
        self.sample_rate: int = int(self.mel.sample_rate)

    def tokens(self, text: str, where: str = "text") -> list[int]:
        from tasks.tts.g2p import check_text
        from tasks.tts.normalize import normalize_text

        if not isinstance(text, str) or not text.strip():
            raise HackathonError(f"{where}: empty text, nothing to say.", fix="Send a sentence in Chinese characters.")
        spoken = normalize_text(text)  # numbers, dates, Latin letters read as the synthesize stage reads them
        check_text(spoken, self.tokenizer, where if spoken == text else f"{where} (normalised from {text!r})")
        return encode(self.tokenizer, spoken)

    def mel_of_tokens(self, tokens: list[int], pace: float = 1.0) -> np.ndarray:
        """Log-mel [n_mels, frames] from FastPitch ONNX (pitch shift 0, one pace for every token)."""
        text = np.asarray([tokens], dtype=np.int64)
        feed = {"text": text, "pitch": np.zeros(text.shape, dtype=np.float32),
                "pace": np.full(text.shape, pace, dtype=np.float32)}
        spect = self.fastpitch.run(None, feed)[0]
        return spect[0]

    def vocode(self, log_mel: np.ndarray) -> np.ndarray:
        from tasks.tts.vocoder import griffin_lim, normalize_peak

        if self.vocoder_kind == "hifigan":
            name = self.hifigan.get_inputs()[0].name
            audio = self.hifigan.run(None, {name: log_mel[None].astype(np.float32)})[0]
            return normalize_peak(np.asarray(audio, dtype=np.float32).reshape(-1))
        c = self.griffin_lim_cfg
        return griffin_lim(log_mel, self.mel, n_iter=int(c.n_iter), power=float(c.power),
                           momentum=float(c.momentum), oversample=int(c.oversample))

    def synthesize(self, text: str, pace: float | None = None) -> np.ndarray:
        """Float32 waveform at self.sample_rate; pace defaults to the run's synthesize.pace."""
        return self.vocode(self.mel_of_tokens(self.tokens(text), self.pace if pace is None else float(pace)))


def load(run_dir: str | Path, vocoder: str | None = None, prefer_gpu: bool = True) -> TtsPredictor:
    """The predictor of a TTS run dir. `vocoder` defaults to the run's own choice (config `vocoder`):
    the one its evaluate stage scored. hifigan needs export/hifigan.onnx."""
    from omegaconf import OmegaConf

    from hackathon.core.onnx_session import create_session
    from tasks.tts.vocoder import VOCODERS

    run_dir = Path(run_dir)
    export_dir = run_dir / EXPORT_DIR
    for name in (FASTPITCH_ONNX, SETTINGS, DICT_NAME):
        if not (export_dir / name).is_file():
            raise HackathonError(f"{export_dir / name} not found: {run_dir} has no TTS ONNX export.", fix=EXPORT_FIX)
    if not (run_dir / "config.yaml").is_file():
        raise HackathonError(f"{run_dir} is not a TTS run directory (no config.yaml).", fix=EXPORT_FIX)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    settings = OmegaConf.load(export_dir / SETTINGS)
    kind = str(vocoder or cfg.vocoder)
    if kind not in VOCODERS:
        raise HackathonError(f"Unknown vocoder {kind!r}.", fix=f"Use {' or '.join(VOCODERS)}.")
    hifigan = None
    if kind == "hifigan":
        hifigan = create_session(export_dir / HIFIGAN_ONNX,
                                 "Use vocoder=griffin_lim, or run with hifigan.enabled=true and export again "
                                 "(`hackathon run tts --from hifigan`).", prefer_gpu=prefer_gpu)
    tokenizer = make_tokenizer(settings.text_tokenizer, export_dir / DICT_NAME)
    if list(tokenizer.tokens) != list(settings.tokens):
        raise HackathonError(f"The tokenizer rebuilt from {export_dir / SETTINGS} has other tokens than the exported "
                             "FastPitch was trained with (NeMo or pypinyin changed since the export?).", fix=EXPORT_FIX)
    fastpitch = create_session(export_dir / FASTPITCH_ONNX, EXPORT_FIX, prefer_gpu=prefer_gpu)
    return TtsPredictor(export_dir, settings, tokenizer, fastpitch, kind, hifigan, cfg.griffin_lim,
                        pace=float(cfg.synthesize.get("pace", 1.0)))
