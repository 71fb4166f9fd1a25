"""Specs: load specs/<task>/<name>.yaml, merge `key=value` overrides, save the resolved config."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Sequence

from hackathon.core.errors import HackathonError
from hackathon.core.paths import SPECS_DIR, spec_path


def resolve_spec_file(task: str, spec: str | None) -> Path:
    """`spec` may be None (the task's demo spec), a name in specs/<task>/, or a file path."""
    if spec is None:
        default = spec_path(task, "demo")
        if not default.exists():
            raise HackathonError(f"The {task} demo spec {default} is missing.",
                                 fix="Restore it from git (git checkout -- specs/) or pass --spec FILE.")
        return default
    p = Path(spec)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    named = spec_path(task, spec)
    if named.exists():
        return named
    choices = sorted(x.stem for x in (SPECS_DIR / task).glob("*.yaml"))
    raise HackathonError(f"Spec '{spec}' not found (neither a file nor specs/{task}/{spec}.yaml).",
                         fix=f"Use one of {choices} or a path to a YAML file.")


_SEXAGESIMAL = re.compile(r"[0-9]+(:[0-9]+)+")


def backend_demo_spec(task: str, overrides: Sequence[str]) -> str | None:
    """`hackathon run asr backend=whisper_lora` without --spec: the demo spec of that backend, i.e. the
    specs/<task>/*demo.yaml whose top-level `backend:` is that name (None: the task's own demo.yaml)."""
    import re

    wanted = [o.split("=", 1)[1].strip() for o in overrides if o.split("=", 1)[0] == "backend"]
    if not wanted:
        return None
    line = re.compile(r"^backend:\s*([\w.-]+)", re.MULTILINE)
    default = spec_path(task, "demo")
    found = line.search(default.read_text(encoding="utf-8")) if default.exists() else None
    if found and found.group(1) == wanted[-1]:
        return None
    for path in sorted((SPECS_DIR / task).glob("*demo.yaml")):
        found = line.search(path.read_text(encoding="utf-8"))
        if found and found.group(1) == wanted[-1]:
            return str(path)
    return None


def _all_keys(cfg, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    keys = []
    for k in cfg.keys():
        full = f"{prefix}{k}"
        keys.append(full)
        v = cfg._get_node(k)
        if isinstance(v, DictConfig):
            keys.extend(_all_keys(v, full + "."))
    return keys


def parse_overrides(overrides: Sequence[str]) -> list[str]:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise HackathonError(f"Override {bad[0]!r} is not key=value.",
                             fix="Write overrides as dotted.key=value, e.g. trainer.max_epochs=5.")
    return list(overrides)


def load_config(task: str, spec: str | None = None, overrides: Sequence[str] = ()):
    """The resolved task config. Unknown override keys are refused (typos would silently do nothing)
    unless written `+new.key=value`, as in Hydra."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = resolve_spec_file(task, spec if spec is not None else backend_demo_spec(task, overrides))
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, Exception) as exc:  # yaml errors come in several types
        raise HackathonError(f"Cannot parse spec {path}: {exc}", fix="Fix the YAML syntax at the line shown.")
    known = set(_all_keys(cfg))
    dotlist = []
    for item in parse_overrides(overrides):
        key, value = item.split("=", 1)
        if _SEXAGESIMAL.fullmatch(value.strip()):  # YAML 1.1 would read elastic.nnodes=1:2 as the number 62
            item = f"{key}='{value.strip()}'"
        if key.startswith("+"):
            dotlist.append(f"{key[1:]}={value}")
            continue
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            raise HackathonError(
                f"Unknown config key {key!r} for task {task} (spec {path}).",
                fix=(f"Did you mean {close}? " if close else "") + f"See {path} for the fields, or write +{key}=... to add a new key.")
        dotlist.append(item)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as exc:
        raise HackathonError(f"Override does not fit the spec: {exc}", fix=f"Check the field types in {path}.")
    return cfg


def to_yaml(cfg) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def cfg_slice(cfg, keys: Sequence[str]) -> dict:
    """Plain-dict view of the named top-level (or dotted) keys, for fingerprints."""
    from omegaconf import OmegaConf

    out = {}
    for k in keys:
        node = OmegaConf.select(cfg, k)
        out[k] = OmegaConf.to_container(node, resolve=True) if hasattr(node, "_get_node") or OmegaConf.is_config(node) else node
    return out
