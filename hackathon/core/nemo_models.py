"""Restore a NeMo .nemo file with the errors users can act on (one place for ASR, FastPitch, HiFiGAN)."""

from __future__ import annotations

from pathlib import Path

from hackathon.core.errors import HackathonError


def restore_nemo(model_cls, path: str | Path, missing: str, missing_fix: str, trainer=None,
                 map_location: str | None = None):
    """`model_cls.restore_from(path)`, on the GPU when there is one (unless `map_location` says otherwise).

    A missing file raises `missing` + `missing_fix`; a file NeMo cannot read says it is not a whole .nemo.
    """
    path = Path(path)
    if not path.is_file():
        raise HackathonError(missing.format(path=path), fix=missing_fix)
    if map_location is None:
        import torch

        map_location = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return model_cls.restore_from(str(path), trainer=trainer, map_location=map_location)
    except Exception as exc:  # tar/yaml/state-dict errors come in many types
        raise HackathonError(f"Cannot load {path} as a {model_cls.__name__}: {exc}",
                             fix="Check that the file is a complete .nemo archive saved by NeMo (not a .ckpt).") from exc
