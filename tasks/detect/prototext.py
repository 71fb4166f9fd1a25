"""A schema-free reader of protobuf text format that keeps line numbers, on protobuf's own tokenizer.

TAO reads its specs with `text_format.Merge`; this reads the same syntax (blocks with `{}` or `<>`,
an optional `:` before a block, `[a, b]` lists, `;`/`,` separators, `#` comments, adjacent string
literals) into `Entry` objects, so the spec checker (tasks/detect/tao_schema.py) can name the line of
every field and the tests can look values up. Types are not known here: a scalar keeps its token kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hackathon.core.errors import HackathonError

IDENT_RE = re.compile(r"^[A-Za-z_][\w]*$")


@dataclass
class Entry:
    """One `name: value` or `name { ... }` of a spec (or one element of a `name: [..]` list)."""

    name: str
    line: int  # 1-based line of the field name
    kind: str  # "message" | "string" | "identifier" | "number"
    value: Any  # list[Entry] for a message, else the string / token text
    in_list: bool = False  # written as an element of `name: [...]`

    @property
    def children(self) -> list["Entry"]:
        return self.value if self.kind == "message" else []


def _line(tok) -> int:
    # ParseError is public API and carries the tokenizer's current position (1-based).
    return tok.ParseError("").GetLine()


def parse(text: str, source: str = "spec") -> list[Entry]:
    """The top-level entries of `text`; a syntax error is a HackathonError naming the line."""
    from google.protobuf import text_format

    tok = text_format.Tokenizer(text.splitlines())
    try:
        return _block(tok, closing=None, opened=0)
    except text_format.ParseError as exc:
        line = exc.GetLine() if exc.GetLine() is not None else "?"
        raise HackathonError(f"{source} line {line}: not valid protobuf text format: {exc}",
                             fix="Fix the syntax on that line: `field: value`, `block { ... }`, strings in double quotes.") from exc


def _block(tok, closing: str | None, opened: int) -> list[Entry]:
    entries: list[Entry] = []
    while True:
        if closing is not None and tok.TryConsume(closing):
            return entries
        if tok.AtEnd():
            if closing is not None:
                from google.protobuf.text_format import ParseError

                raise ParseError(f"the block opened on line {opened} is never closed (missing '{closing}')",
                                 line=opened, column=1)
            return entries
        line = _line(tok)
        name = tok.ConsumeIdentifier()
        colon = tok.TryConsume(":")
        if tok.LookingAt("{") or tok.LookingAt("<"):
            entries.append(_message(tok, name, line))
        elif colon and tok.TryConsume("["):
            entries += _list(tok, name, line)
        elif colon:
            kind, value = _scalar(tok)
            entries.append(Entry(name, line, kind, value))
        else:
            raise tok.ParseError(f"expected ':' or '{{' after {name}")
        if not tok.TryConsume(";"):
            tok.TryConsume(",")


def _message(tok, name: str, line: int, in_list: bool = False) -> Entry:
    if tok.TryConsume("{"):
        close = "}"
    else:
        tok.Consume("<")
        close = ">"
    return Entry(name, line, "message", _block(tok, closing=close, opened=line), in_list=in_list)


def _list(tok, name: str, line: int) -> list[Entry]:
    out: list[Entry] = []
    if tok.TryConsume("]"):
        return out
    while True:
        item_line = _line(tok)
        if tok.LookingAt("{") or tok.LookingAt("<"):
            out.append(_message(tok, name, item_line, in_list=True))
        else:
            kind, value = _scalar(tok)
            out.append(Entry(name, item_line, kind, value, in_list=True))
        if tok.TryConsume("]"):
            return out
        tok.Consume(",")


def _scalar(tok) -> tuple[str, str]:
    if tok.token[:1] in ("'", '"'):
        return "string", tok.ConsumeString()  # joins adjacent literals and undoes C escapes
    text = tok.token
    if not text or text in "{}<>[]:;,":
        raise tok.ParseError(f"expected a value, found {text!r}")
    tok.NextToken()
    return ("identifier" if IDENT_RE.match(text) else "number"), text


# ------------------------------------------------------------------ look-ups (tests, pipeline)

def as_dict(entries: list[Entry] | str) -> dict:
    """{field: [values...]}, nested blocks as dicts of the same shape (text is parsed first)."""
    if isinstance(entries, str):
        entries = parse(entries)
    out: dict = {}
    for e in entries:
        out.setdefault(e.name, []).append(as_dict(e.children) if e.kind == "message" else e.value)
    return out


def one(d: dict, dotted: str):
    """The single value at a.b.c of an `as_dict` result (each level present exactly once)."""
    node = d
    for part in dotted.split("."):
        values = node[part]
        if len(values) != 1:
            raise AssertionError(f"{part} repeated {len(values)}x")
        node = values[0]
    return node
