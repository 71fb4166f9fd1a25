"""Transcript text for char-level CTC: clean-up, language guess, character inventory, OOV report.

Why this exists: NeMo's char parser maps a character outside the model's labels to -1 and then drops
it without a word (and its default `en` parser empties hanzi transcripts). Everything that decides
which characters a model sees goes through here, and every character a model cannot output is counted
and reported instead.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Iterable, Mapping, Sequence

from hackathon.core.text import is_cjk

_SPACES = re.compile(r"\s+")


def detect_language(texts: Iterable[str]) -> str:
    """'zh' when most letters are hanzi, else 'en' (any space-delimited script is scored like English)."""
    han = other = 0
    for text in texts:
        for ch in text:
            if is_cjk(ch):
                han += 1
            elif ch.isalpha():
                other += 1
    return "zh" if han > other else "en"


def normalize_text(text: str, language: str, lowercase: bool = True, strip_punctuation: bool = True) -> str:
    """The transcript the model is trained and scored on.

    Chinese: all whitespace removed (it is not spoken; the character is the unit). Others: whitespace
    collapsed to single spaces. Punctuation (Unicode category P*) removed when asked: it is not audible.
    """
    text = unicodedata.normalize("NFKC", text) if language != "zh" else text
    if strip_punctuation:
        text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    if lowercase:
        text = text.lower()
    if language == "zh":
        return _SPACES.sub("", text)
    return _SPACES.sub(" ", text).strip()


def removed_characters(before: str, after: str) -> Counter:
    """Characters (other than whitespace) that normalisation took out, for the prepare summary."""
    removed = Counter(c for c in before.lower() if not c.isspace()) - Counter(c for c in after if not c.isspace())
    return Counter({c: n for c, n in removed.items() if n > 0})


def character_counts(texts: Iterable[str]) -> Counter:
    return Counter(ch for text in texts for ch in text)


def vocabulary_from_texts(texts: Iterable[str]) -> list[str]:
    """Sorted characters of the transcripts: the labels of a char CTC model (space included if used)."""
    return sorted(character_counts(texts))


def oov_counts(texts: Iterable[str], vocabulary: Sequence[str]) -> dict[str, int]:
    """{character: occurrences} for characters of `texts` that are not in `vocabulary`."""
    vocab = set(vocabulary)
    counts = Counter(ch for text in texts for ch in text if ch not in vocab)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def oov_report(split_texts: Mapping[str, Sequence[str]], vocabulary: Sequence[str]) -> dict:
    """Per split: OOV characters with counts and how many utterances contain one."""
    vocab = set(vocabulary)
    report = {}
    for split, texts in split_texts.items():
        counts = oov_counts(texts, vocabulary)
        report[split] = {
            "characters": counts,
            "n_chars": sum(counts.values()),
            "n_utts_affected": sum(1 for t in texts if any(ch not in vocab for ch in t)),
            "n_utts": len(texts),
        }
    return report


def covers(vocabulary: Sequence[str], texts: Iterable[str]) -> bool:
    return not oov_counts(texts, vocabulary)
