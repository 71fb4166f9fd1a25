"""TAO 5 experiment specs (protobuf text format) from the YAML templates in specs/detect/tao/.

A template is YAML that mirrors TAO's proto messages field for field; `key=value` overrides are merged
into it, and `render` writes protobuf text: strings quoted and C-escaped, enums bare, maps as
`name { key: "k" value: v }` entries, lists as repeated fields/blocks, null fields left out (TAO's
default). `render` also returns where every path field landed (line numbers), so the mount pre-flight
can name the spec line of a bad path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from hackathon.core.atomic import atomic_write_text
from hackathon.core.errors import HackathonError
from hackathon.core.paths import SPECS_DIR
from tasks.detect.tao_messages import MESSAGES

TEMPLATES_DIR = SPECS_DIR / "detect" / "tao"
NETWORKS = ("ssd", "yolo_v3")

# proto map<> fields (rendered as repeated {key value} entries) and enum fields (written bare, keyed by
# (parent block, field)), both read from TAO's message tables so the writer and the checker agree.
MAP_FIELDS = {f for _, fields, _ in MESSAGES.values() for f, t in fields.items() if t.startswith("map<")}
ENUM_FIELDS = {(parent, f): tuple(t.split()[1:])
               for _, pfields, _ in MESSAGES.values() for parent, ptype in pfields.items() if ptype in MESSAGES
               for f, t in MESSAGES[ptype][1].items() if t.startswith("enum ")}
# Fields holding filesystem paths: translated host->container and checked before a container starts.
PATH_FIELDS = {"tfrecords_path", "image_directory_path", "label_directory_path", "root_directory_path",
               "pretrain_model_path", "resume_model_path", "pruned_model_path", "root_path"}
# training_config's `load_model` oneof (the pipeline swaps pretrain for resume when it resumes).
LOAD_MODEL_ONEOF = MESSAGES["common/TrainingConfig"][2]["load_model"]
# repeated message fields (data_sources, ...): their dotted names carry an index, as `render` writes them
REPEATED_BLOCKS = {f for _, fields, _ in MESSAGES.values() for f, t in fields.items()
                   if t.startswith("repeated ") and t.split()[1] in MESSAGES}


@dataclass(frozen=True)
class SpecField:
    """Where a field ended up in a rendered spec (1-based line), for error messages."""

    line: int
    field: str  # dotted, e.g. dataset_config.data_sources[0].tfrecords_path
    value: Any


def template_path(name: str) -> Path:
    return TEMPLATES_DIR / f"{name}.yaml"


def load_template(name: str) -> dict:
    """`ssd`, `yolo_v3` or `dataset_convert` as a plain nested dict (key order kept)."""
    from omegaconf import OmegaConf

    path = template_path(name)
    if not path.exists():
        choices = sorted(p.stem for p in TEMPLATES_DIR.glob("*.yaml"))
        raise HackathonError(f"No TAO spec template {path}.", fix=f"Use one of {choices} (network=ssd|yolo_v3).")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


# ------------------------------------------------------------------ overrides

def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(spec: dict, overrides: Iterable[str] | Mapping | None, kind: str, origin: str = "override") -> dict:
    """Merge `block.field=value` strings (or a nested mapping) into `spec`, in place.

    Keys must be fields of TAO's `kind` messages (tasks/detect/tao_messages.py), in or beyond the template:
    a typo would otherwise reach the container. A leading `+` is accepted and ignored (older docs).
    Lists are indexed `data_sources.0.x`.
    """
    from tasks.detect.tao_schema import field_at

    if not overrides:
        return spec
    items = list(_flatten(overrides)) if isinstance(overrides, Mapping) else list(overrides)
    for item in items:
        if isinstance(item, tuple):
            key, value = item
        else:
            if "=" not in item:
                raise HackathonError(f"{origin} {item!r} is not key=value.",
                                     fix="Write TAO spec overrides as block.field=value, e.g. training_config.num_epochs=5.")
            key, raw = item.split("=", 1)
            key, value = key.lstrip("+"), _parse_value(raw)
        field_at(kind, key, origin)
        _set_dotted(spec, key, value)
    return spec


def _flatten(m: Mapping, prefix: str = ""):
    """(dotted key, value) leaves of a nested override mapping; maps like target_class_mapping stay whole."""
    for k, v in m.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and k not in MAP_FIELDS and v:
            yield from _flatten(v, key + ".")
        else:
            yield (key, v)


def _set_dotted(spec: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = spec
    for i, p in enumerate(parts[:-1]):
        nxt_is_index = parts[i + 1].isdigit()
        if isinstance(node, list):
            node = node[int(p)]
            continue
        if p not in node or node[p] is None:
            node[p] = [] if nxt_is_index else {}
        node = node[p]
    last = parts[-1]
    if isinstance(node, list):
        idx = int(last)
        while len(node) <= idx:
            node.append({})
        node[idx] = value
    else:
        node[last] = value


# ------------------------------------------------------------------ rendering

C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote(value: str) -> str:
    """A protobuf text-format string literal: C escapes, non-ASCII bytes as octal (what CEscape does)."""
    return '"' + "".join(C_ESCAPES.get(chr(b)) or (chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}")
                         for b in value.encode("utf-8")) + '"'


def _scalar(value: Any, parent: str, field: str, where: str) -> str:
    if (parent, field) in ENUM_FIELDS:  # written bare; the schema check names a bad value with its line
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HackathonError(f"{where}: {value} is not a finite number.", fix="Use a finite number.")
        return repr(value)
    if isinstance(value, (str, Path)):
        return quote(str(value))
    raise HackathonError(f"{where}: cannot write a {type(value).__name__} into a TAO spec.",
                         fix="Use a number, true/false, a string, a list or a nested block.")


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.fields: list[SpecField] = []

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("  " * depth + text)

    def block(self, d: Mapping, depth: int, parent: str, path: str) -> None:
        for field, value in d.items():
            dotted = f"{path}.{field}" if path else field
            if value is None:
                continue  # TAO's default
            if field in MAP_FIELDS and isinstance(value, Mapping):
                for k, v in value.items():
                    self.emit(depth, f"{field} {{")
                    self.emit(depth + 1, f"key: {quote(str(k))}")
                    self.emit(depth + 1, f"value: {_scalar(v, field, 'value', dotted)}")
                    self.emit(depth, "}")
            elif isinstance(value, Mapping):
                self.emit(depth, f"{field} {{")
                self.block(value, depth + 1, field, dotted)
                self.emit(depth, "}")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Mapping):
                        self.emit(depth, f"{field} {{")
                        self.block(item, depth + 1, field, f"{dotted}[{i}]")
                        self.emit(depth, "}")
                    elif item is not None:
                        self.emit(depth, f"{field}: {_scalar(item, parent, field, dotted)}")
            else:
                self.emit(depth, f"{field}: {_scalar(value, parent, field, dotted)}")
                if field in PATH_FIELDS:
                    self.fields.append(SpecField(len(self.lines), dotted, str(value)))


def render(spec: Mapping) -> tuple[str, list[SpecField]]:
    """Protobuf text for `spec` and the line of every path field in it (`check` validates it)."""
    w = _Writer()
    w.block(spec, 0, "", "")
    return "\n".join(w.lines) + "\n", w.fields


def write_spec(spec: Mapping, target: Path, kind: str, hint: str = "") -> list[SpecField]:
    """Render, check against TAO's `kind` messages (ssd | yolo_v3 | dataset_convert), then write atomically:
    a spec TAO would refuse is never written."""
    text, fields = check(spec, kind, where=str(target), hint=hint)
    atomic_write_text(target, text)
    return fields


def check(spec: Mapping, kind: str, where: str = "TAO spec", hint: str = "") -> tuple[str, list[SpecField]]:
    """`render` + the schema check of tasks/detect/tao_schema.py on the final text (after overrides)."""
    from tasks.detect.tao_schema import validate_text

    text, fields = render(spec)
    validate_text(text, kind, source=where, hint=hint)
    return text, fields


def path_fields_in_text(text: str, source: str = "spec") -> list[SpecField]:
    """SpecFields (line, dotted field, value) of the path fields of a spec's text."""
    from tasks.detect.prototext import parse

    out: list[SpecField] = []

    def walk(entries, prefix: str) -> None:
        counts: dict[str, int] = {}
        for e in entries:
            dotted = f"{prefix}{e.name}"
            if e.kind == "message":
                i = counts[e.name] = counts.get(e.name, -1) + 1
                walk(e.children, f"{dotted}[{i}]." if e.name in REPEATED_BLOCKS else dotted + ".")
            elif e.name in PATH_FIELDS and e.kind == "string":
                out.append(SpecField(e.line, dotted, e.value))

    walk(parse(text, source), "")
    return out


def map_path_fields(spec: Any, fn, field: str = "") -> Any:
    """A copy of `spec` with fn(dotted_field, value) applied to every non-null path field."""
    if isinstance(spec, Mapping):
        out = {}
        for k, v in spec.items():
            dotted = f"{field}.{k}" if field else k
            if k in PATH_FIELDS and v is not None and not isinstance(v, (Mapping, list)):
                out[k] = fn(dotted, str(v))
            else:
                out[k] = map_path_fields(v, fn, dotted)
        return out
    if isinstance(spec, list):
        return [map_path_fields(v, fn, f"{field}[{i}]") for i, v in enumerate(spec)]
    return spec


# ------------------------------------------------------------------ the two spec kinds

def experiment_spec(network: str, overrides: Iterable[str] | Mapping | None = None,
                    classes: Iterable[str] | None = None) -> dict:
    """The experiment spec dict for `network` (ssd | yolo_v3): template + overrides (+ class mapping)."""
    if network not in NETWORKS:
        raise HackathonError(f"network={network!r} is not a TAO detector this tool drives.",
                             fix=f"Use network={' or network='.join(NETWORKS)}.")
    spec = load_template(network)
    apply_overrides(spec, overrides, network, origin=f"tao.experiment override ({network})")
    if classes is not None:
        spec["dataset_config"]["target_class_mapping"] = class_mapping(classes)
    return spec


def convert_spec(overrides: Iterable[str] | Mapping | None = None, classes: Iterable[str] | None = None) -> dict:
    """The dataset_convert (kitti_config) spec dict."""
    spec = load_template("dataset_convert")
    apply_overrides(spec, overrides, "dataset_convert", origin="dataset_convert override")
    if classes is not None:
        spec["target_class_mapping"] = class_mapping(classes)
    return spec


def class_mapping(classes: Iterable[str]) -> dict:
    """KITTI names are lower-case (TAO lower-cases labels when it reads them): map each to itself."""
    return {c.lower(): c.lower() for c in classes}


OVERRIDE_HINT = (" The line numbers are those of the spec rendered from the template + your overrides: "
                 "change or drop the override that sets that field.")


def check_experiment(network: str, overrides: Iterable[str] | Mapping | None) -> None:
    """Template + overrides checked against TAO's messages, before any stage runs (null fields are left
    out: the paths and anchors the pipeline fills in later do not change the structure)."""
    check(experiment_spec(network, overrides, classes=None), network,
          where=f"the {network} spec from {template_path(network).name} + tao.experiment", hint=OVERRIDE_HINT)


def missing_required(spec: Mapping, network: str) -> list[str]:
    """Fields TAO needs that are still null (the pipeline fills them; a hand-made spec may not)."""
    need = ["dataset_config.data_sources", "dataset_config.validation_data_sources",
            "augmentation_config.output_width", "augmentation_config.output_height"]
    if network == "yolo_v3":
        need += [f"yolov3_config.{k}" for k in ("big_anchor_shape", "mid_anchor_shape", "small_anchor_shape")]
    missing = []
    for dotted in need:
        node: Any = spec
        for p in dotted.split("."):
            node = node.get(p) if isinstance(node, Mapping) else None
        if node in (None, [], {}):
            missing.append(dotted)
    for src_key in ("data_sources", "validation_data_sources"):
        for i, src in enumerate(spec.get("dataset_config", {}).get(src_key) or []):
            if not any(src.get(k) for k in ("tfrecords_path", "label_directory_path")) or not src.get("image_directory_path"):
                missing.append(f"dataset_config.{src_key}[{i}]")
    return missing


def write_spec_file(network: str, overrides: Iterable[str], out: Path) -> str:
    """`hackathon detect tao-spec`: a spec for the TAO launcher from a template + overrides.

    Refuses to overwrite an existing file; returns a summary naming the fields still to fill in."""
    out = Path(out)
    if out.exists():
        raise HackathonError(f"{out} already exists.", fix="Choose another --out path or delete the file first.")
    if network == "dataset_convert":
        spec, missing = convert_spec(overrides), []
    else:
        spec = experiment_spec(network, overrides)
        missing = missing_required(spec, network)
    write_spec(spec, out, network, hint=OVERRIDE_HINT)
    note = f"wrote {out} (TAO {network} spec, protobuf text format)"
    if missing:
        note += "\nstill unset (fill them in, in container paths): " + ", ".join(missing)
    return note
