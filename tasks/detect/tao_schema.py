"""Check a TAO spec's text against TAO 5's own messages (tasks/detect/tao_messages.py) before a container starts.

TAO stops at `text_format.Merge` on an unknown field or a badly typed value, after the container has
started; and Merge silently keeps the last of two values given to one field or to one oneof. Here
every line is checked against the message it sits in: unknown field (with a did-you-mean and where the
field does belong), wrong nesting, a bad enum value, a scalar where a block is expected and the other
way round, a number that does not fit the field's type, a single-valued field given twice or as a
list, and two members of one oneof. All problems are reported at once, each with its line and fix.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from hackathon.core.errors import HackathonError
from tasks.detect import prototext
from tasks.detect.tao_messages import HINTS, MESSAGES, ROOTS

PROTO_ROOT = "nvidia_tao_tf1/cv/"
INT_RE = re.compile(r"^-?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$")
FLOAT_RE = re.compile(r"^-?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)[fF]?$")
FLOAT_WORDS = {"inf", "infinity", "nan", "-inf", "-infinity", "-nan"}
BOOL_WORDS = {"true", "false", "True", "False", "t", "f", "1", "0"}
INT_RANGES = {"uint32": (0, 2**32 - 1), "int32": (-2**31, 2**31 - 1)}
SCALARS = ("string", "bool", "uint32", "int32", "float", "double")


@dataclass(frozen=True)
class FieldType:
    """One field's type, parsed from the table's type string."""

    label: str  # "single" | "repeated" | "map"
    kind: str  # a scalar kind, "enum", or "message"
    message: str | None = None  # MESSAGES key of a message field
    enum: tuple[str, ...] = ()
    map_value: str | None = None  # scalar kind of a map's values

    @staticmethod
    def of(text: str) -> "FieldType":
        if text.startswith("map<"):
            return FieldType("map", "message", map_value=text[4:-1].split(",")[1].strip())
        label = "single"
        if text.startswith("repeated "):
            label, text = "repeated", text[len("repeated "):]
        if text.startswith("enum "):
            return FieldType(label, "enum", enum=tuple(text.split()[1:]))
        if text in SCALARS:
            return FieldType(label, text)
        if text not in MESSAGES:
            raise KeyError(f"tao_messages: unknown type {text!r}")
        return FieldType(label, "message", message=text)

    def describe(self) -> str:
        base = {"message": "a block", "enum": f"one of {' '.join(self.enum)} (bare, no quotes)"}.get(
            self.kind, f"a {self.kind}")
        if self.label == "map":
            return f"map entries `{{ key: \"...\" value: <{self.map_value}> }}`"
        return ("repeated: " if self.label == "repeated" else "") + base


def message_name(key: str) -> str:
    """`EvalConfig (nvidia_tao_tf1/cv/common/proto/eval_config.proto)`."""
    return f"{key.split('/')[-1]} ({PROTO_ROOT}{MESSAGES[key][0]})"


def fields_of(key: str) -> dict[str, FieldType]:
    return {name: FieldType.of(t) for name, t in MESSAGES[key][1].items()}


def where_allowed(root: str, name: str, prefix: str = "") -> list[str]:
    """Dotted paths under `root` at which a field called `name` exists."""
    out = []
    for fname, ftype in fields_of(root).items():
        path = f"{prefix}{fname}"
        if fname == name:
            out.append(path)
        if ftype.kind == "message" and ftype.message:
            out += where_allowed(ftype.message, name, path + ".")
    return out


def other_messages_with(name: str, exclude: set[str]) -> list[str]:
    return [message_name(k) for k, (_, fields, _) in MESSAGES.items() if name in fields and k not in exclude]


def reachable(root: str) -> set[str]:
    seen, todo = set(), [root]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        todo += [t.message for t in fields_of(key).values() if t.message]
    return seen


@dataclass(frozen=True)
class Problem:
    line: int
    field: str  # dotted path
    text: str
    fix: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.text}\n    fix: {self.fix}"


def explain_unknown(kind: str, key: str, path: str, name: str, line: int | None = None,
                    is_block: bool = False) -> tuple[str, str]:
    """(what is wrong, the fix) for a field `name` that message `key` (at dotted `path`) does not have;
    the fix names spec line `line`, or (line None) the `key=value` override that set it."""
    allowed = sorted(MESSAGES[key][1])
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.75)
    block = path or f"the top level of the {kind} spec"
    text = f"{message_name(key)} has no field `{name}`; fields of {block}: {', '.join(allowed)}."
    elsewhere = where_allowed(ROOTS[kind], name)
    if close:
        fix = f"Did you mean `{close[0]}`? " + (f"Rename it (line {line})." if line else "Rename it in the override.")
    elif elsewhere:
        text = f"wrong nesting: {text}"
        fix = (f"Move it to {' or '.join(elsewhere)} (line {line} sits in {block})." if line
               else f"Override {' or '.join(elsewhere)} instead.")
    else:
        owners = other_messages_with(name, reachable(ROOTS[kind]))
        if owners:
            text += f" `{name}` exists only in {', '.join(owners)}, which the {kind} spec does not use."
        drop = (f"Delete line {line}" + (" (and its block)" if is_block else "")) if line else "Drop that override"
        fix = f"{drop}, or use one of the fields of {block} listed above."
    if (kind, name) in HINTS:
        fix += " " + HINTS[(kind, name)]
    return text, fix


def field_at(kind: str, dotted: str, origin: str = "override") -> FieldType:
    """The type of the field at `a.b.c` (list indices skipped, map keys allowed) of a `kind` spec,
    or a HackathonError naming the allowed fields (for `key=value` overrides, before anything is written)."""
    key, path = ROOTS[kind], ""
    parts = [p for p in dotted.split(".") if not p.isdigit()]
    for i, part in enumerate(parts):
        ftype = fields_of(key).get(part)
        if ftype is None:
            text, fix = explain_unknown(kind, key, path, part)
            raise HackathonError(f"{origin}: {dotted!r}: {text}", fix=fix)
        if i == len(parts) - 1 or ftype.label == "map":  # a map's keys are data, not fields
            return ftype
        if ftype.kind != "message":
            raise HackathonError(f"{origin}: {dotted!r}: `{part}` is {ftype.describe()}, not a block, so it has "
                                 f"no field `{parts[i + 1]}`.", fix=f"Set it as {'.'.join(parts[:i + 1])}=<value>.")
        key, path = ftype.message, f"{path}.{part}" if path else part
    return FieldType("single", "message", message=key)


class _Checker:
    def __init__(self, kind: str):
        self.kind = kind
        self.root = ROOTS[kind]
        self.problems: list[Problem] = []

    def add(self, entry: prototext.Entry, path: str, text: str, fix: str) -> None:
        self.problems.append(Problem(entry.line, path, text, fix))

    def message(self, entries: list[prototext.Entry], key: str, path: str) -> None:
        fields = fields_of(key)
        _, _, oneofs = MESSAGES[key]
        first_line: dict[str, int] = {}
        oneof_seen: dict[str, tuple[str, int]] = {}
        listed: set[str] = set()
        for e in entries:
            dotted = f"{path}.{e.name}" if path else e.name
            ftype = fields.get(e.name)
            if ftype is None:
                self.add(e, dotted, *explain_unknown(self.kind, key, path, e.name, e.line, e.kind == "message"))
                continue
            if ftype.label == "single":
                if e.in_list:
                    if e.name not in listed:
                        self.add(e, dotted, "written as a list `[...]`, but it holds a single value.",
                                 f"Write `{e.name}: value` once.")
                    listed.add(e.name)
                elif e.name in first_line:
                    self.add(e, dotted, f"set again (first on line {first_line[e.name]}); it is a single value and "
                             "TAO would silently keep only the last one.", f"Keep one `{e.name}` in this block.")
            first_line.setdefault(e.name, e.line)
            for group, members in oneofs.items():
                if e.name in members:
                    other = oneof_seen.setdefault(group, (e.name, e.line))
                    if other[0] != e.name:
                        self.add(e, dotted, f"{other[0]} (line {other[1]}) is already set; both are members of the "
                                 f"oneof `{group}` {members} of {message_name(key)}, and TAO would silently keep "
                                 "only the last one.", f"Keep only one of {', '.join(members)}.")
            self.value(e, ftype, dotted)

    def value(self, e: prototext.Entry, ftype: FieldType, dotted: str) -> None:
        if ftype.kind == "message":  # a nested message or a map entry
            if e.kind != "message":
                self.add(e, dotted, f"is a value ({e.value!r}) but `{e.name}` is {ftype.describe()}.",
                         f"Write it as a block: `{e.name} {{ ... }}`" +
                         (" with key and value" if ftype.label == "map" else "") + ".")
            elif ftype.label == "map":
                self.map_entry(e, ftype, dotted)
            else:
                self.message(e.children, ftype.message, dotted)
            return
        if e.kind == "message":
            self.add(e, dotted, f"is a block but `{e.name}` is {ftype.describe()}.",
                     f"Write `{e.name}: <value>` instead of a block.")
            return
        bad = scalar_error(ftype.kind, ftype.enum, e)
        if bad:
            fix = (f"Use one of {', '.join(ftype.enum)} (bare, no quotes)." if ftype.kind == "enum"
                   else f"Write a {ftype.kind}" + (" in double quotes." if ftype.kind == "string" else "."))
            if ftype.kind == "enum":
                close = difflib.get_close_matches(str(e.value).strip('"').upper(), ftype.enum, n=1, cutoff=0.5)
                if close:
                    fix = f"Did you mean {close[0]}? " + fix
            self.add(e, dotted, bad, fix)

    def map_entry(self, e: prototext.Entry, ftype: FieldType, dotted: str) -> None:
        names = [c.name for c in e.children]
        for c in e.children:
            if c.name not in ("key", "value"):
                self.add(c, f"{dotted}.{c.name}", f"a map entry has only `key` and `value`, not `{c.name}`.",
                         f'Write `{e.name} {{ key: "..." value: ... }}`.')
            elif c.kind == "message":
                self.add(c, f"{dotted}.{c.name}", "is a block but map keys and values are plain values.",
                         f"Write `{c.name}: <value>`.")
            else:
                kind = "string" if c.name == "key" else ftype.map_value
                bad = scalar_error(kind, (), c)
                if bad:
                    self.add(c, f"{dotted}.{c.name}", bad, f"Write a {kind}" + (" in double quotes." if kind == "string" else "."))
        for need in ("key", "value"):
            if need not in names:
                self.add(e, dotted, f"a map entry without `{need}`.", f'Write `{e.name} {{ key: "..." value: ... }}`.')


def scalar_error(kind: str, enum: tuple[str, ...], e: prototext.Entry) -> str | None:
    """Why token `e` does not parse as a `kind` value (None if it does), as text_format.Merge reads it."""
    tok, tk = str(e.value), e.kind
    if kind == "string":
        return None if tk == "string" else f"{tok} is not a string: TAO needs it in double quotes."
    if tk == "string":
        return f'"{tok}" is a quoted string, but this field is {"an enum" if kind == "enum" else "a " + kind}.'
    if kind == "enum":
        if tk == "identifier" and tok in enum:
            return None
        if tk == "number" and INT_RE.match(tok) and 0 <= int(tok, 0) < len(enum):
            return None
        return f"{tok} is not a value of this enum ({', '.join(enum)})."
    if kind == "bool":
        return None if tok in BOOL_WORDS else f"{tok} is not a bool (true or false)."
    if kind in INT_RANGES:
        if not INT_RE.match(tok):
            return f"{tok} is not an integer ({kind})."
        lo, hi = INT_RANGES[kind]
        return None if lo <= int(tok, 0) <= hi else f"{tok} is out of range for {kind} ({lo}..{hi})."
    if kind in ("float", "double"):
        ok = FLOAT_RE.match(tok) or tok.lower() in FLOAT_WORDS
        return None if ok else f"{tok} is not a number ({kind})."
    raise KeyError(kind)


def check_text(text: str, kind: str, source: str = "spec") -> list[Problem]:
    """Every problem of `text` as a TAO `kind` spec (ssd | yolo_v3 | dataset_convert)."""
    if kind not in ROOTS:
        raise HackathonError(f"No TAO message table for {kind!r}.", fix=f"Use one of {', '.join(ROOTS)}.")
    checker = _Checker(kind)
    checker.message(prototext.parse(text, source), ROOTS[kind], "")
    return sorted(checker.problems, key=lambda p: p.line)


def validate_text(text: str, kind: str, source: str = "spec", hint: str = "") -> None:
    """Raise a HackathonError listing every problem (line, field, allowed fields, fix); quiet if none."""
    problems = check_text(text, kind, source)
    if not problems:
        return
    listing = "\n".join(f"  {source} {p}" for p in problems)
    raise HackathonError(
        f"{source} is not a valid TAO 5 {kind} spec ({len(problems)} problem{'s' * (len(problems) > 1)}; "
        f"TAO would stop at this before training):\n{listing}",
        fix=(problems[0].fix if len(problems) == 1 else "Fix each line above as its fix says.") + hint)


def validate_file(path: Path, kind: str) -> str:
    """`hackathon detect tao-spec KIND --check FILE`: "ok" or a HackathonError."""
    path = Path(path)
    if not path.is_file():
        raise HackathonError(f"{path} does not exist.", fix="Give the spec file TAO would read (-e / -d).")
    validate_text(path.read_text(encoding="utf-8", errors="replace"), kind, source=str(path))
    return f"ok: {path} is a valid TAO 5 {kind} spec ({message_name(ROOTS[kind])})"
