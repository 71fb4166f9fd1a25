"""Specs: load specs/<task>/<name>.yaml, merge `key=value` overrides, save the resolved config."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Sequence

from hackathon.core.errors import HackathonError
from hackathon.core.paths import REPO_ROOT, SPECS_DIR, spec_path


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
    specs/<task>/*demo.yaml whose top-level `backend:` is that name (None: none is, or no backend override)."""
    wanted = [o.split("=", 1)[1].strip() for o in overrides if o.split("=", 1)[0] == "backend"]
    if not wanted:
        return None
    line = re.compile(r"^backend:\s*([\w.-]+)", re.MULTILINE)
    for path in sorted((SPECS_DIR / task).glob("*demo.yaml")):
        found = line.search(path.read_text(encoding="utf-8"))
        if found and found.group(1) == wanted[-1]:
            return str(path)
    return None


def _all_keys(cfg) -> set[str]:
    """Every dotted key: the leaves and each section above them."""
    return {leaf.rsplit(".", n)[0] for leaf in _leaves(cfg) for n in range(leaf.count(".") + 1)}


def parse_overrides(overrides: Sequence[str]) -> list[str]:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise HackathonError(f"Override {bad[0]!r} is not key=value.",
                             fix="Write overrides as dotted.key=value, e.g. trainer.max_epochs=5.")
    return list(overrides)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _load_yaml(path: Path):
    from omegaconf import DictConfig, OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml errors come in several types
        raise HackathonError(f"Cannot parse spec {path}: {exc}", fix="Fix the YAML syntax at the line shown.")
    if not isinstance(cfg, DictConfig):
        raise HackathonError(f"Spec {path} is not a mapping of fields.", fix="Write the spec as `key: value` lines.")
    return cfg


def spec_chain(path: Path, home: Path | None = None) -> list[tuple[Path, object]]:
    """[(file, its config without `base`)] from the root base to `path`. `base: NAME` is specs in the same
    folder (NAME.yaml), `base: ../x.yaml` a path relative to the file; not there, relative to `home` (the
    task's specs/ folder: a copy of demo.yaml elsewhere keeps its base)."""
    chain: list[tuple[Path, object]] = []
    while path is not None:
        if path.resolve() in [p.resolve() for p, _ in chain]:
            names = " -> ".join(_display(p) for p, _ in reversed(chain)) + f" -> {_display(path)}"
            raise HackathonError(f"Spec `base:` chain is a cycle: {names}.", fix="Remove the `base:` line that points back.")
        cfg = _load_yaml(path)
        base = cfg.pop("base", None)
        chain.append((path, cfg))
        if base is None:
            break
        base = str(base)
        rel = base if base.endswith((".yaml", ".yml")) or "/" in base else f"{base}.yaml"
        nxt = path.parent / rel
        if not nxt.exists() and home is not None:
            nxt = home / rel
        if not nxt.exists():
            raise HackathonError(f"{_display(path)}: base spec {base!r} not found ({nxt}).",
                                 fix="Write `base: NAME` for specs/<task>/NAME.yaml or a path relative to the file.")
        path = nxt
    return chain[::-1]


REPLACE = "_replace_"  # `section: {_replace_: true, ...}` in a spec: the section replaces its base's, not merged


def _leaves(cfg, prefix: str = "") -> list[str]:
    """Dotted keys whose value is not a mapping (lists count as one value: a later file replaces them)."""
    from omegaconf import DictConfig

    out = []
    for k in cfg.keys():
        node = cfg._get_node(k)
        if k == REPLACE:
            continue
        if isinstance(node, DictConfig) and not node._is_none() and set(node.keys()) - {REPLACE}:
            out.extend(_leaves(node, f"{prefix}{k}."))
        else:
            out.append(f"{prefix}{k}")
    return out


def _replaced(cfg, prefix: str = "") -> list[str]:
    """Dotted paths of the mappings marked `_replace_: true` (the marker is removed)."""
    from omegaconf import DictConfig

    out = []
    for k in list(cfg.keys()):
        node = cfg._get_node(k)
        if isinstance(node, DictConfig) and not node._is_none():
            if node.pop(REPLACE, False):
                out.append(f"{prefix}{k}")
            out.extend(_replaced(node, f"{prefix}{k}."))
    return out


def merge_specs(parts):
    """OmegaConf merge of spec files, later over earlier (lists replace; `_replace_` mappings too)."""
    import copy

    from omegaconf import OmegaConf

    merged = OmegaConf.create()
    for part in parts:
        part = copy.deepcopy(part)
        for path in _replaced(part):
            parent, _, key = path.rpartition(".")
            node = OmegaConf.select(merged, parent) if parent else merged
            if node is not None and key in node:
                del node[key]
        merged = OmegaConf.merge(merged, part)
    return merged


def renamed_keys(task: str) -> dict[str, str]:
    """specs/renamed.yaml: {old.dotted.key: new.dotted.key} of this task."""
    import yaml

    path = SPECS_DIR / "renamed.yaml"
    table = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    return dict((table or {}).get(task) or {})


def _refuse_renamed(renames: dict[str, str], keys, where: str, value: str | None = None) -> None:
    for key in keys:
        for old, new in renames.items():
            if key == old or key.startswith(old + "."):
                now = new + key[len(old):]
                fix = f"write {now}={value}" if value is not None else f"write it as {now} in {where}"
                raise HackathonError(f"{key} was renamed ({where}): {fix}.",
                                     fix=f"Use {now} (specs/renamed.yaml lists every renamed key).")


def load_config_with_sources(task: str, spec: str | None = None, overrides: Sequence[str] = ()):
    """(resolved task config, {leaf key: the spec file that set it last, or "override"}). A spec may start
    with `base:`; its values are merged over its base's (merge_specs). Unknown override
    keys are refused (typos would silently do nothing) unless written `+new.key=value`, as in Hydra;
    renamed keys (specs/renamed.yaml) are refused with their new name."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = resolve_spec_file(task, spec if spec is not None else backend_demo_spec(task, overrides))
    renames = renamed_keys(task)
    sources: dict[str, str] = {}
    chain = spec_chain(path, SPECS_DIR / task)
    for file, part in chain:
        _refuse_renamed(renames, _all_keys(part), _display(file))
        sources.update({k: _display(file) for k in _leaves(part)})
    try:
        cfg = merge_specs([part for _, part in chain])
    except OmegaConfBaseException as exc:
        raise HackathonError(f"Spec {path} does not fit its base: {exc}", fix="Check the field types against the base spec.")
    known = _all_keys(cfg)
    dotlist = []
    for item in parse_overrides(overrides):
        key, value = item.split("=", 1)
        _refuse_renamed(renames, [key.lstrip("+")], "override", value)
        if _SEXAGESIMAL.fullmatch(value.strip()):  # YAML 1.1 would read elastic.nnodes=1:2 as the number 62
            item = f"{key}='{value.strip()}'"
        if key.startswith("+"):
            dotlist.append(item[1:])
            continue
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            raise HackathonError(
                f"Unknown config key {key!r} for task {task} (spec {path}).",
                fix=(f"Did you mean {close}? " if close else "") + f"See {path} for the fields, or write +{key}=... to add a new key.")
        dotlist.append(item)
    try:
        extra = OmegaConf.from_dotlist(dotlist)
        cfg = OmegaConf.merge(cfg, extra)
    except OmegaConfBaseException as exc:
        raise HackathonError(f"Override does not fit the spec: {exc}", fix=f"Check the field types in {path}.")
    sources.update({k: "override" for k in _leaves(extra)})
    return cfg, sources


def load_config(task: str, spec: str | None = None, overrides: Sequence[str] = ()):
    return load_config_with_sources(task, spec, overrides)[0]


def describe_config(task: str, spec: str | None = None, overrides: Sequence[str] = ()) -> str:
    """The resolved spec as YAML (interpolations resolved), each value followed by `# <file>` or
    `# override`: where it was set last (`hackathon run TASK --print-config`)."""
    import yaml
    from omegaconf import OmegaConf

    cfg, sources = load_config_with_sources(task, spec, overrides)
    lines: list[str] = []

    def emit(node, prefix: str, indent: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                lines.append(f"{indent}{k}:")
                emit(v, key + ".", indent + "  ")
                continue
            src = f"  # {sources.get(key, '?')}"
            if isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v):
                block = yaml.safe_dump(v, sort_keys=False, allow_unicode=True, default_flow_style=None).rstrip("\n").splitlines()
                lines.extend([f"{indent}{k}:{src}"] + [f"{indent}  {b}" for b in block])
            else:
                text = yaml.safe_dump(v, default_flow_style=True, allow_unicode=True, width=10**6)
                lines.append(f"{indent}{k}: {text.removesuffix(chr(10)).removesuffix('...').strip()}{src}")

    emit(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False), "", "")
    return "\n".join(lines) + "\n"


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
