"""Compose the NeMo model configs (specs/tts/models/*.yaml) with a spec's overrides and a run's files."""

from __future__ import annotations

from pathlib import Path

from hackathon.errors import HackathonError
from hackathon.paths import SPECS_DIR


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
