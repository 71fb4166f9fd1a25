"""Shared text helpers: the hanzi test, spoken characters, edit distance (of strings or word lists), CER/WER."""

from __future__ import annotations

import unicodedata
from typing import Sequence


def is_cjk(ch: str) -> bool:
    """Han ideographs (CJK Unified + Extension A + Compatibility)."""
    cp = ord(ch)
    return 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF


def spoken_chars(text: str) -> str:
    """Characters that are spoken: punctuation and spaces removed, Latin lower-cased."""
    return "".join(ch for ch in text.lower() if not ch.isspace() and not unicodedata.category(ch).startswith("P"))


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance of two strings (character edits) or two lists of words (word edits)."""
    import editdistance

    return int(editdistance.eval(list(ref), list(hyp)))


def error_rate(errors: float, total: float) -> float:
    """Edits per reference unit; an empty reference scores 1.0 when anything was heard, else 0.0."""
    return errors / total if total else float(errors > 0)


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of `hypothesis` against `reference`, as given (normalise before if needed)."""
    return error_rate(edit_distance(reference, hypothesis), len(reference))


def corpus_rate(rows, errors_key: str, total_key: str) -> float | None:
    """Corpus-level rate: all edits over all reference units (not the mean of per-sentence rates)."""
    total = sum(r[total_key] for r in rows)
    return sum(r[errors_key] for r in rows) / total if total else None


def align_errors(ref: str, hyp: str) -> tuple[list[int], list[str]]:
    """Levenshtein alignment. Returns (errors charged to each reference character — substitution/deletion
    of it, plus insertions just before it — and the hypothesis text aligned to each reference character).
    The errors sum to edit_distance(ref, hyp)."""
    import numpy as np

    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    errors, aligned = [0] * (n + 1), [""] * (n + 1)  # index n collects trailing insertions
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            errors[i - 1] += int(ref[i - 1] != hyp[j - 1])
            aligned[i - 1] = hyp[j - 1] + aligned[i - 1]
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            errors[i - 1] += 1
            i -= 1
        else:
            errors[min(i, n)] += 1
            aligned[min(i, n)] = hyp[j - 1] + aligned[min(i, n)]
            j -= 1
    errors[n - 1 if n else 0] += errors[n] if n else 0
    return errors[:n], aligned[:n]
