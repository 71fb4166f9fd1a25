"""Compose the NeMo model configs (specs/tts/models/*.yaml) with a spec's overrides and a run's files."""

from __future__ import annotations

from pathlib import Path

from hackathon.core.errors import HackathonError
from hackathon.core.paths import SPECS_DIR


def model_config_path(section) -> Path:
    """The full NeMo config a spec section names (relative to specs/tts/, or absolute)."""
    p = Path(section.model_config)
    path = p if p.is_absolute() else SPECS_DIR / "tts" / p
    if not path.is_file():
        raise HackathonError(f"Model config {path} not found (from the spec's model_config field).",
                             fix="Point model_config at a file in specs/tts/models/.")
    return path


def load_model_config(section, filled: dict):
    """Full config <- spec overrides <- run-specific values (`filled`, dotted keys). Resolved, no ??? left."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(model_config_path(section))
    overrides = section.get("model_overrides") or {}
    cfg = OmegaConf.merge(cfg, overrides)
    for key, value in filled.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise HackathonError(f"Model config {model_config_path(section)} has unfilled fields: {missing}",
                             fix="These are set by the pipeline; run the stages before this one.")
    OmegaConf.resolve(cfg)
    return cfg


# ---------------------------------------------------------------- sample rate / mel consistency

# The fields that define a mel spectrogram: FastPitch's output and HiFiGAN's input must agree on all of them.
MEL_KEYS = ("sample_rate", "n_mel_channels", "n_fft", "n_window_size", "n_window_stride", "lowfreq", "highfreq")


def supported_rates() -> list[int]:
    """Sample rates with a FastPitch and a HiFiGAN config in specs/tts/models/ (<model>_<rate>.yaml)."""
    models = SPECS_DIR / "tts" / "models"
    rates = {int(p.stem.split("_")[-1]) for p in models.glob("fastpitch_*.yaml") if p.stem.split("_")[-1].isdigit()}
    return sorted(r for r in rates if (models / f"hifigan_{r}.yaml").is_file())


def spec_model_config(section):
    """A spec section's model config with its model_overrides, ??? fields left unfilled (no run files needed)."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.load(model_config_path(section)), section.get("model_overrides") or {})


def mel_settings(model_cfg) -> dict:
    """The MEL_KEYS of a FastPitch/HiFiGAN config (top-level fields of both)."""
    return {k: model_cfg.get(k) for k in MEL_KEYS}


def upsample_product(hifigan_cfg) -> int:
    product = 1
    for rate in hifigan_cfg.model.generator.upsample_rates:
        product *= int(rate)
    return product


def check_vocoder_mels(fastpitch_mels: dict, hifigan_cfg, hifigan_what: str, fastpitch_what: str,
                       fix: str | None = None) -> None:
    """HiFiGAN must read exactly FastPitch's mels and upsample one frame to one hop; else it only makes noise."""
    hifigan_mels = mel_settings(hifigan_cfg)
    bad = {k: (fastpitch_mels[k], hifigan_mels[k]) for k in MEL_KEYS if fastpitch_mels[k] != hifigan_mels[k]}
    if bad:
        rate = fastpitch_mels["sample_rate"]
        raise HackathonError(f"{hifigan_what} does not match {fastpitch_what}: {bad} (fastpitch, hifigan).",
                             fix=fix or "Use a HiFiGAN made for these mels: "
                                 f"hifigan.model_config=models/hifigan_{rate}.yaml "
                                 "(the default follows data.sample_rate) with the same n_mel_channels override, or "
                                 "vocoder=griffin_lim.")
    product, hop = upsample_product(hifigan_cfg), int(hifigan_mels["n_window_stride"])
    if product != hop:
        raise HackathonError(f"{hifigan_what}: generator upsample_rates multiply to {product}, the mel hop is {hop}.",
                             fix="Make the product of model.generator.upsample_rates equal n_window_stride "
                                 "(256 at 22.05 kHz, 512 at 44.1 kHz).")


def check_sample_rates(cfg) -> dict:
    """Refuse, before any work, a spec whose data, FastPitch config and HiFiGAN config disagree.

    Returns FastPitch's mel settings (what pitch extraction and Griffin-Lim follow)."""
    rate = int(cfg.data.sample_rate)
    rates = supported_rates()
    if rate not in rates:
        raise HackathonError(f"data.sample_rate={rate}: no TTS model configs for this rate (have {rates}).",
                             fix=f"Set data.sample_rate to one of {rates} (44100 for the competition).")
    fastpitch_path = model_config_path(cfg.fastpitch)
    fastpitch = mel_settings(spec_model_config(cfg.fastpitch))
    if int(fastpitch["sample_rate"]) != rate:
        raise HackathonError(f"data.sample_rate is {rate} Hz but the FastPitch config {fastpitch_path.name} works at "
                             f"{fastpitch['sample_rate']} Hz.",
                             fix=f"Use fastpitch.model_config=models/fastpitch_{rate}.yaml (the default follows "
                                 f"data.sample_rate), or set data.sample_rate={fastpitch['sample_rate']}.")
    if cfg.vocoder == "hifigan" and not cfg.hifigan.enabled:
        raise HackathonError("vocoder=hifigan but hifigan.enabled is false: no vocoder would be trained.",
                             fix="Set hifigan.enabled=true, or vocoder=griffin_lim.")
    if cfg.hifigan.enabled:
        check_vocoder_mels(fastpitch, spec_model_config(cfg.hifigan),
                           f"HiFiGAN config {model_config_path(cfg.hifigan).name}", f"FastPitch config {fastpitch_path.name}")
    check_inits(cfg, fastpitch)
    return fastpitch


# Pretrained NGC vocoders per sample rate (NeMo 3.0's HifiGanModel.list_available_models()).
VOCODERS = {22050: "tts_zh_hifigan_sfspeech", 44100: "tts_en_hifitts_hifigan_ft_fastpitch"}


def check_inits(cfg, fastpitch_mels: dict) -> None:
    """Refuse, before any work, an init that cannot be used: a missing file, a hub name neither cached nor
    downloadable, a vocoder made for other mels (another sample rate) than our FastPitch's."""
    if str(cfg.fastpitch.init) == str(cfg.hifigan.init) == "scratch":
        return
    from nemo.collections.tts.models import FastPitchModel, HifiGanModel
    from omegaconf import OmegaConf

    from hackathon.core.nemo_models import init_nemo_file, nemo_config

    init_nemo_file(FastPitchModel, cfg.fastpitch.init, "FastPitch", "fastpitch.init")
    path = init_nemo_file(HifiGanModel, cfg.hifigan.init, "HiFiGAN", "hifigan.init") if cfg.hifigan.enabled else None
    if path is None:
        return
    saved_cfg = nemo_config(path)
    pre = saved_cfg.preprocessor
    saved = OmegaConf.create({"sample_rate": pre.sample_rate, "n_mel_channels": pre.nfilt, "n_fft": pre.n_fft,
                              "n_window_size": pre.n_window_size, "n_window_stride": pre.n_window_stride,
                              "lowfreq": pre.lowfreq, "highfreq": pre.highfreq, "model": saved_cfg})
    rate, other = int(cfg.data.sample_rate), VOCODERS.get(int(cfg.data.sample_rate), "scratch")
    check_vocoder_mels(fastpitch_mels, saved, f"hifigan.init={cfg.hifigan.init} ({pre.sample_rate} Hz, {pre.nfilt} mels)",
                       f"this run's FastPitch mels (data.sample_rate={rate})",
                       fix=f"Start from a vocoder made for {rate} Hz mels (hifigan.init={other}), train it from scratch "
                           "(hifigan.init=scratch), or set fastpitch.model_overrides to the vocoder's mel settings.")
