"""G2P: the pypinyin-built dictionary covers the demo text, unseen names map, unmappable characters are named."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hackathon.core.errors import HackathonError

G2P_CFG = SimpleNamespace(word_segmenter="jieba", phoneme_prefix="", tone_prefix="#", ascii_letter_prefix="")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tasks.tts.g2p import make_tokenizer, write_pinyin_dict

    path = write_pinyin_dict(tmp_path_factory.mktemp("g2p") / "pinyin_dict.txt")
    return make_tokenizer(path, G2P_CFG)


def demo_sentences() -> list[str]:
    from data_tools.speech_synth import TTS_GREETINGS, TTS_NAMES, TTS_TEMPLATE

    return [TTS_TEMPLATE.format(greeting=g, name=n) for g in TTS_GREETINGS for n in TTS_NAMES]


def test_dictionary_format_is_what_chinese_g2p_reads(tmp_path):
    from tasks.tts.g2p import write_pinyin_dict

    lines = [line for line in write_pinyin_dict(tmp_path / "d.txt").read_text().splitlines() if not line.startswith(";;;")]
    entries = dict(line.split("\t") for line in lines)
    assert len(entries) > 400  # every Mandarin syllable pypinyin knows
    assert entries["zhang"] == "ZH ANG"
    assert entries["lv"] == "L V"  # ü spelled v, as pypinyin's TONE3 output
    assert entries["er"] == "ER"
    assert all(v == v.upper() for v in entries.values())


def test_every_character_of_the_demo_text_maps(tokenizer):
    from tasks.tts.g2p import phonemes_of, unmapped_characters

    for sentence in demo_sentences():
        assert unmapped_characters(sentence, tokenizer) == [], sentence
        phonemes = phonemes_of(sentence, tokenizer)
        # one tone token per Chinese character: nothing was skipped
        n_han = sum(1 for ch in sentence if "\u4e00" <= ch <= "\u9fff")
        assert sum(1 for p in phonemes if p.startswith("#")) == n_han, sentence


def test_name_never_seen_in_training_maps_fully(tokenizer):
    from tasks.tts.g2p import phonemes_of, unmapped_characters

    sentence = "您好，欧阳娜娜，欢迎回家，二维码有效请您通过。"
    assert unmapped_characters(sentence, tokenizer) == []
    phonemes = phonemes_of(sentence, tokenizer)
    assert phonemes[phonemes.index("，") + 1:][:4] == ["OU", "#1", "IANG", "#2"]


def test_unmappable_characters_are_named_not_dropped(tokenizer):
    from tasks.tts.g2p import check_text, unmapped_characters

    problems = unmapped_characters("您好3号楼☺", tokenizer)
    assert [(p.char, p.position) for p in problems] == [("3", 2), ("☺", 5)]
    with pytest.raises(HackathonError) as err:
        check_text("您好3号楼☺", tokenizer, "line 7")
    assert "line 7" in err.value.message and "'3'" in err.value.message and "'☺'" in err.value.message


@pytest.mark.parametrize("text,spoken", [
    ("3号楼2单元", "三号楼二单元"),
    ("2026年11月29日", "二零二六年十一月二十九日"),
    ("下午3点", "下午三点"),
    ("A座", "诶座"),
    ("2026-11-29 8:05", "二零二六年十一月二十九日 八点零五分"),
    ("2栋1单元，电话13812345678", "二栋一单元，电话一三八一二三四五六七八"),
    ("体温36.5℃，湿度50%", "体温三十六点五摄氏度，湿度百分之五十"),
])
def test_normaliser_reads_numbers_dates_times_letters(tokenizer, text, spoken):
    from tasks.tts.g2p import check_text, phonemes_of
    from tasks.tts.normalize import normalize_text

    assert normalize_text(text) == spoken
    check_text(spoken, tokenizer, "test")  # maps fully: no refusal
    assert sum(1 for p in phonemes_of(spoken, tokenizer) if p.startswith("#")) == sum(
        1 for ch in spoken if "\u4e00" <= ch <= "\u9fff")


def test_every_latin_letter_reads_as_mapped_hanzi(tokenizer):
    from tasks.tts.g2p import unmapped_characters
    from tasks.tts.normalize import LETTER_READINGS, normalize_text

    assert len(LETTER_READINGS) == 26
    spoken = normalize_text("Tony王 abcdefghijklmnopqrstuvwxyz")
    assert not any(ch.isascii() and ch.isalpha() for ch in spoken)
    assert unmapped_characters(spoken, tokenizer) == []


def test_still_unmappable_after_normalising_is_refused_by_name(tokenizer):
    from tasks.tts.g2p import check_text
    from tasks.tts.normalize import normalize_text

    with pytest.raises(HackathonError) as err:
        check_text(normalize_text("3号楼☺"), tokenizer, "line 2")
    assert "'☺'" in err.value.message and "line 2" in err.value.message
