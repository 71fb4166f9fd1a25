"""The residential gate: speech + photo + name -> transcript, phrase check, mask class, decision, spoken reply.

The decision is plain functions of the model outputs and the `gate` section of specs/serve/*.yaml, so it
is the same whether the models run in-process (`hackathon serve`, the page) or behind Triton BLS (the
deployed repository's gate model.py imports this module too).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from hackathon.core.text import cer, spoken_chars

NO_FACE = "no_face"


def top_face_class(scores, labels, min_score: float) -> str:
    """The label of the highest-scoring detection at or above `min_score`, else no_face."""
    best, best_label = -1.0, NO_FACE
    for score, label in zip(np.asarray(scores, dtype=float).reshape(-1), labels):
        if score >= min_score and score > best:
            best, best_label = float(score), str(label)
    return best_label


@dataclass
class Decision:
    transcript: str
    phrase_ok: bool
    cer: float
    mask: str
    admit: bool
    reason: str  # admitted | wrong_phrase | <mask class> | no_face
    reply_text: str


def decide(transcript: str, scores, labels, name: str, gate_cfg) -> Decision:
    """Admit when the pass phrase was said (CER within gate.max_cer) and the top face wears the admit class."""
    error = cer(spoken_chars(str(gate_cfg["pass_phrase"])), spoken_chars(transcript))
    phrase_ok = error <= float(gate_cfg["max_cer"])
    mask = top_face_class(scores, labels, float(gate_cfg["min_face_score"]))
    admit = phrase_ok and mask == str(gate_cfg["admit_class"])
    refusals = gate_cfg["refusals"]
    if admit:
        reason, template = "admitted", gate_cfg["greeting"]
    elif not phrase_ok:
        reason, template = "wrong_phrase", refusals["wrong_phrase"]
    else:
        reason = mask
        template = refusals[mask] if mask in refusals else refusals["without_mask"]
    return Decision(transcript=transcript, phrase_ok=phrase_ok, cer=error, mask=mask, admit=admit, reason=reason,
                    reply_text=str(template).format(name=name))


class ReplyCache:
    """Spoken replies by (text, TTS model), least recently used dropped beyond `size` (0: no cache). The
    gate's replies repeat (one greeting, a few refusals, the same residents' names): each is synthesised once."""

    def __init__(self, size: int):
        self.size, self._items, self._lock = int(size), OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key, audio):
        with self._lock:
            if self.size > 0:
                self._items[key] = audio
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return audio
