"""NeMo .nemo files with the errors users can act on (one place for ASR, FastPitch, HiFiGAN): restore one,
find or download a pretrained one (NeMo's own cache), read its config."""

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


def nemo_cache_file(model_cls, name: str) -> Path | None:
    """Where NeMo's `from_pretrained` keeps the NGC model `name` (NeMo 3.0, common.py
    _get_ngc_pretrained_model_info: <NEMO_CACHE_DIR>/<file stem>/<md5(location + description)>/<file>),
    reused with no network when present; None for a name the class does not list."""
    import hashlib
    from pathlib import PurePosixPath

    from nemo.utils.data_utils import resolve_cache_dir

    for info in model_cls.list_available_models() or []:
        if name == info.pretrained_model_name or name in (info.aliases or []):
            filename = PurePosixPath(info.location).name
            digest = hashlib.md5((info.location + info.description).encode()).hexdigest()
            return resolve_cache_dir() / filename[:-5] / digest / filename
    return None


def pretrained_file(model_cls, name: str, model: str, field: str) -> Path:
    """The .nemo file of a hub name: NeMo's cached copy, else downloaded by NeMo into that cache."""
    from hackathon.core.init_weights import offline_error

    cached = nemo_cache_file(model_cls, name)
    if cached is not None and cached.is_file():
        return cached
    if cached is None and "/" not in name:  # NGC names have no "/", Hugging Face ones do
        known = sorted(m.pretrained_model_name for m in model_cls.list_available_models() or [])
        raise HackathonError(f"{field}={name}: not a pretrained {model} NeMo knows.",
                             fix=f"Use one of {known}, a local .nemo file, or {field}=scratch")
    try:
        return Path(model_cls.from_pretrained(name, return_model_file=True))
    except Exception as exc:  # urllib / huggingface_hub / ValueError("Not able to download") alike
        from nemo.utils.data_utils import resolve_cache_dir

        raise offline_error(model, name, cached or resolve_cache_dir() / "hf_hub_cache" / name, field, exc) from exc


def init_nemo_file(model_cls, init, model: str, field: str) -> Path | None:
    """The .nemo / .ckpt file an `init` names (a hub name: NeMo's cached or downloaded copy); None = scratch."""
    from hackathon.core.init_weights import init_file, kind_of

    kind = kind_of(init)
    if kind == "file":
        return init_file(init, model, field)
    if kind == "hub":
        return pretrained_file(model_cls, str(init), model, field)
    if kind == "packaged":
        raise HackathonError(f"{field}={init}: no packaged {model} weights.",
                             fix=f"Use a .nemo file, an NGC name or {field}=scratch")
    return None


def load_init_model(model_cls, path: Path):
    """A .nemo (restored) or a NeMo Lightning .ckpt (its saved cfg), on the CPU."""
    if Path(path).suffix == ".ckpt":
        return model_cls.load_from_checkpoint(str(path), map_location="cpu", strict=False)
    return restore_nemo(model_cls, path, "{path} not found.", "Give an existing .nemo file.", map_location="cpu")


def nemo_config(path: str | Path):
    """The config of a .nemo (its model_config.yaml) or a NeMo .ckpt (hyper_parameters.cfg), without building
    the model: a quick pre-flight read."""
    import tarfile

    from omegaconf import OmegaConf

    if Path(path).suffix == ".ckpt":
        import torch

        return OmegaConf.create(torch.load(path, map_location="cpu", weights_only=False)["hyper_parameters"]["cfg"])
    try:
        with tarfile.open(path, "r:*") as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("model_config.yaml"))
            return OmegaConf.create(tar.extractfile(member).read().decode())
    except (tarfile.TarError, StopIteration, OSError) as exc:
        raise HackathonError(f"Cannot read the model config inside {path}: {exc or 'no model_config.yaml'}",
                             fix="Give a complete .nemo archive saved by NeMo.") from exc
