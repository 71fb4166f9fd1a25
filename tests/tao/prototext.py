"""A schema-free reader of protobuf text format (protobuf's own tokenizer) for checking generated specs:
returns {field: [values...]} with nested blocks as dicts of the same shape."""

from __future__ import annotations

from google.protobuf import text_format


def parse(text: str) -> dict:
    tok = text_format.Tokenizer(text.splitlines())
    out = _block(tok, top=True)
    assert tok.AtEnd()
    return out


def _block(tok, top: bool = False) -> dict:
    out: dict = {}
    while not tok.AtEnd():
        if not top and tok.TryConsume("}"):
            return out
        name = tok.ConsumeIdentifier()
        tok.TryConsume(":")
        if tok.TryConsume("{"):
            value = _block(tok)
        elif tok.token.startswith(('"', "'")):
            value = tok.ConsumeString()
        else:
            raw = tok.ConsumeIdentifierOrNumber() if not tok.token.startswith("-") else tok.token
            if raw == tok.token and raw.startswith("-"):
                tok.NextToken()
            value = raw
        out.setdefault(name, []).append(value)
    if not top:
        raise AssertionError("unclosed block")
    return out


def one(d: dict, dotted: str):
    """The single value at a.b.c (each level must be present exactly once)."""
    node = d
    for part in dotted.split("."):
        values = node[part]
        assert len(values) == 1, f"{part} repeated {len(values)}x"
        node = values[0]
    return node
