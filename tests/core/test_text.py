"""The one CER/WER, hanzi test and JSONL reader (hackathon.core.text, hackathon.core.atomic.read_jsonl)."""

from __future__ import annotations

import random

import pytest

from hackathon.core.atomic import atomic_write_jsonl, read_jsonl
from hackathon.core.errors import HackathonError
from hackathon.core.text import align_errors, cer, corpus_rate, edit_distance, error_rate, is_cjk, spoken_chars


def test_rates():
    assert cer("你好大白", "你好大白") == 0.0
    assert cer("你好大白请让我进入小区", "你好大白") == pytest.approx(7 / 11)
    assert cer("", "") == 0.0 and cer("", "x") == 1.0
    assert error_rate(edit_distance("the cat sat".split(), "the bat sat down".split()), 3) == pytest.approx(2 / 3)
    rows = [{"e": 1, "n": 4}, {"e": 3, "n": 4}]
    assert corpus_rate(rows, "e", "n") == 0.5 and corpus_rate([], "e", "n") is None
    assert spoken_chars("你好，Da Bai！") == "你好dabai"


def test_hanzi():
    assert all(map(is_cjk, "你好㐀豈")) and not any(map(is_cjk, "a1，。ｱ"))


def test_alignment_errors_sum_to_the_edit_distance():
    rng = random.Random(0)
    for _ in range(300):
        ref = "".join(rng.choice("你好大白进入") for _ in range(rng.randint(0, 9)))
        hyp = "".join(rng.choice("你好大白进入") for _ in range(rng.randint(0, 9)))
        errors, aligned = align_errors(ref, hyp)
        assert len(errors) == len(aligned) == len(ref)
        assert sum(errors) == edit_distance(ref, hyp) or not ref


def test_read_jsonl(tmp_path):
    path = atomic_write_jsonl(tmp_path / "a.jsonl", [{"id": 1}, {"id": "二"}])
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert read_jsonl(path) == [{"id": 1}, {"id": "二"}]
    assert read_jsonl(tmp_path / "missing.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError):
        read_jsonl(tmp_path / "missing.jsonl")
    path.write_text('{"id": 1}\n{"id": \n', encoding="utf-8")
    with pytest.raises(HackathonError, match="a.jsonl:2: broken JSON"):
        read_jsonl(path)
