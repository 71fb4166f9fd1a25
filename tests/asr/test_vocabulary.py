"""Transcript clean-up, language detection and OOV reports (no NeMo, no training)."""

from tasks.asr import vocabulary as v


def test_chinese_normalisation_keeps_every_hanzi():
    raw = "你好，大白！请让我 进入小区。"
    text = v.normalize_text(raw, "zh")
    assert text == "你好大白请让我进入小区"
    assert [c for c in raw if v.is_cjk(c)] == list(text)  # every character kept, in order
    assert v.removed_characters(raw, text) == {"，": 1, "！": 1, "。": 1}


def test_english_normalisation_collapses_spaces_and_lowercases():
    assert v.normalize_text("  Hello,   WORLD!  ", "en") == "hello world"
    assert v.normalize_text("it's", "en", strip_punctuation=False) == "it's"


def test_detect_language():
    assert v.detect_language(["你好大白", "我来送快递 ok"]) == "zh"
    assert v.detect_language(["open the door", "thanks 谢谢"]) == "en"


def test_oov_report_counts_characters_and_utterances():
    vocab = list("你好大白")
    report = v.oov_report({"train": ["你好大白", "你好小区"], "test": ["大白", "白天"]}, vocab)
    assert report["train"]["characters"] == {"区": 1, "小": 1}
    assert report["train"]["n_utts_affected"] == 1
    assert report["test"] == {"characters": {"天": 1}, "n_chars": 1, "n_utts_affected": 1, "n_utts": 2}
    assert v.covers(vocab, ["白白"]) and not v.covers(vocab, ["天"])


def test_vocabulary_from_texts_is_sorted_and_complete():
    assert v.vocabulary_from_texts(["谢谢你", "你好"]) == sorted(set("谢谢你你好"))
