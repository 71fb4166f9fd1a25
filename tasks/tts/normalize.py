"""Chinese text normalisation before G2P: numbers, dates, times, units, percent, Latin letters -> hanzi.

Greetings carry building numbers ("3号楼2单元"), dates, times ("下午3点") and names with Latin letters
("A座", "Tony王"). Numbers go through cn2an (`an2cn` transform: "3号楼" -> "三号楼", "2026年" -> "二零二六年",
"50%" -> "百分之五十") after a few rewrites it does not do: clock times ("12:30"), ISO dates ("2026-11-29"),
unit symbols after a number ("5kg"), long digit strings read digit by digit (phone and ID numbers).
Latin letters become the hanzi Mandarin speakers use to spell them (A 诶, B 比, ...), so they reach the
pinyin dictionary like any other syllable instead of NeMo's English-letter tokens that the model never saw.

NeMo's zh normaliser (nemo_text_processing) imports here but reads "3号楼" as "三日楼" (a date), which is
exactly the phrase a gate greeting needs; cn2an reads it right. What is still unmappable after this
(emoji, rare symbols) is refused by tasks/tts/g2p.check_text with the character named.
"""

from __future__ import annotations

import re

# How Mandarin speakers spell Latin letters, in hanzi whose pinyin is in the dictionary (tasks/tts/g2p.py).
LETTER_READINGS = {
    "A": "诶", "B": "比", "C": "西", "D": "迪", "E": "伊", "F": "艾弗", "G": "吉", "H": "艾尺", "I": "艾",
    "J": "杰", "K": "开", "L": "艾勒", "M": "艾姆", "N": "恩", "O": "欧", "P": "批", "Q": "丘", "R": "阿尔",
    "S": "艾丝", "T": "提", "U": "优", "V": "维", "W": "达不溜", "X": "艾克斯", "Y": "歪", "Z": "贼德",
}
DIGITS = "零一二三四五六七八九"
# Unit symbols after a number, as they are read aloud.
UNITS = {"km": "公里", "cm": "厘米", "mm": "毫米", "kg": "公斤", "m²": "平方米", "㎡": "平方米", "m": "米",
         "g": "克", "℃": "摄氏度", "°C": "摄氏度", "°": "度", "h": "小时", "min": "分钟", "s": "秒"}
# Longer digit strings than this (not a year) are codes — phone, ID, plate numbers — read digit by digit.
MAX_CARDINAL_DIGITS = 4

_ISO_DATE = re.compile(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)")
_CLOCK = re.compile(r"(?<!\d)(\d{1,2})[:：](\d{2})(?!\d)")
_UNIT = re.compile(r"(\d)\s*(" + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True)) + r")(?![A-Za-z])")
_LONG_DIGITS = re.compile(r"\d{%d,}(?![\d.年])" % (MAX_CARDINAL_DIGITS + 1))
_FULLWIDTH = str.maketrans({chr(0xFF10 + i): str(i) for i in range(10)}
                           | {chr(0xFF21 + i): chr(0x41 + i) for i in range(26)}
                           | {chr(0xFF41 + i): chr(0x61 + i) for i in range(26)} | {"％": "%"})


def _clock(m: re.Match) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    return f"{hour}点" + ("整" if minute == 0 else f"{minute}分" if minute >= 10 else f"零{minute}分")


def _digit_by_digit(m: re.Match) -> str:
    return "".join(DIGITS[int(d)] for d in m.group(0))


def spell_letters(text: str) -> str:
    """Every Latin letter -> its Mandarin spelling (case-insensitive)."""
    return "".join(LETTER_READINGS.get(ch.upper(), ch) if ch.isascii() and ch.isalpha() else ch for ch in text)


def normalize_text(text: str) -> str:
    """Text as it is spoken, in hanzi and punctuation: "3号楼2单元" -> "三号楼二单元", "A座" -> "诶座"."""
    import cn2an

    out = text.translate(_FULLWIDTH)
    out = _ISO_DATE.sub(lambda m: f"{m.group(1)}年{int(m.group(2))}月{int(m.group(3))}日", out)
    out = _CLOCK.sub(_clock, out)
    out = _UNIT.sub(lambda m: m.group(1) + UNITS[m.group(2)], out)
    out = _LONG_DIGITS.sub(_digit_by_digit, out)
    if any(ch.isdigit() for ch in out):
        out = cn2an.transform(out, "an2cn")
    return spell_letters(out)
