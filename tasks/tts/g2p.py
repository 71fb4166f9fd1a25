"""Mandarin text -> phonemes: a pinyin dictionary built from pypinyin, NeMo's ChineseG2p + ChinesePhonemesTokenizer.

NeMo's own pinyin dictionary (pinyin_dict_nv_22.10.txt) is not in the wheel, so we write one in the format
ChineseG2p reads: `syllable<TAB>INITIAL FINAL` (uppercase), one line per toneless pinyin syllable that
pypinyin can produce. Tones are separate tokens (`#1`..`#5`), added by ChineseG2p itself.

NeMo drops what it cannot map with only a log line ("... Symbol will be skipped"), which is how names came
out garbled before. `unmapped_characters` finds every such character up front so the stage can list the
clips it excluded, and `hackathon tts synthesize` can refuse a sentence instead of mumbling part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hackathon.core.atomic import atomic_write_json, atomic_write_text
from hackathon.core.errors import HackathonError

DICT_HEADER = ";;; pinyin syllable<TAB>initial final (uppercase), generated from pypinyin by tasks/tts/g2p.py\n"


# ---------------------------------------------------------------- dictionary

def all_pinyin_syllables() -> list[str]:
    """Every toneless syllable pypinyin knows, in the spelling NeMo's ChineseG2p looks up ('lv', not 'lü').

    NeMo loads the cc_cedict phrase data into pypinyin, so phrases are scanned as well as single characters.
    """
    from pypinyin import phrases_dict, pinyin_dict
    from pypinyin.contrib.tone_convert import to_normal
    from pypinyin_dict.pinyin_data import cc_cedict

    cc_cedict.load()
    readings = set()
    for value in pinyin_dict.pinyin_dict.values():
        readings.update(value.split(","))
    for phrase in phrases_dict.phrases_dict.values():
        for syllable_options in phrase:
            readings.update(syllable_options)
    return sorted({to_normal(r.strip(), v_to_u=False) for r in readings if r.strip()})


def syllable_phonemes(syllable: str) -> list[str]:
    """'zhang' -> ['ZH', 'ANG'], 'yi' -> ['I'], 'm' -> ['M'] (syllabic nasals are one phoneme)."""
    from pypinyin.contrib.tone_convert import to_finals, to_initials

    initial = to_initials(syllable, strict=True)
    final = to_finals(syllable, strict=True)
    if not final:
        return [syllable.upper()]
    return [p.upper() for p in (initial, final) if p]


def pinyin_dict_text() -> str:
    lines = [f"{s}\t{' '.join(syllable_phonemes(s))}\n" for s in all_pinyin_syllables()]
    return DICT_HEADER + "".join(lines)


def write_pinyin_dict(path: str | Path) -> Path:
    atomic_write_text(path, pinyin_dict_text())
    return Path(path)


# ---------------------------------------------------------------- NeMo G2P + tokenizer

def g2p_config(dict_path: str | Path, g2p_cfg) -> dict:
    """The `text_tokenizer` section of the FastPitch config (same object the model and our checks build)."""
    return {
        "_target_": "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers.ChinesePhonemesTokenizer",
        "punct": True,
        "apostrophe": True,
        "pad_with_space": True,
        "g2p": {
            "_target_": "nemo.collections.tts.g2p.models.zh_cn_pinyin.ChineseG2p",
            "phoneme_dict": str(dict_path),
            "word_segmenter": g2p_cfg.word_segmenter,
            "phoneme_prefix": g2p_cfg.phoneme_prefix,
            "phoneme_case": "upper",
            "tone_prefix": g2p_cfg.tone_prefix,
            "ascii_letter_prefix": g2p_cfg.ascii_letter_prefix,
            "ascii_letter_case": "lower",
        },
    }


def make_tokenizer(dict_path: str | Path, g2p_cfg):
    """NeMo ChinesePhonemesTokenizer over NeMo ChineseG2p, exactly as FastPitch instantiates it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(g2p_config(dict_path, g2p_cfg))
    g2p = instantiate(cfg.g2p)
    return instantiate(cfg, g2p=g2p)


@dataclass
class Unmapped:
    char: str
    position: int
    reason: str


def _is_han(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\U00020000" <= ch <= "\U0002ffff"


def unmapped_characters(text: str, tokenizer) -> list[Unmapped]:
    """Characters of `text` that NeMo's G2P/tokenizer would silently drop, with the reason.

    Mirrors ChineseG2p.__call__: jieba words -> pypinyin TONE3 items (one item per character, non-Chinese
    runs split into letters) -> dictionary lookup; then the tokenizer keeps only known tokens.
    """
    g2p = tokenizer.g2p
    tokens = set(tokenizer.tokens)
    text = tokenizer.text_preprocessing_func(text)
    lowered = text.lower() if g2p.ascii_letter_case == "lower" else text
    out: list[Unmapped] = []
    pos = 0
    for word in g2p.word_segmenter(lowered):
        items = g2p._lazy_pinyin(word, style=g2p._Style.TONE3, neutral_tone_with_five=True,
                                 errors=lambda run: [letter for letter in run])
        chars = list(word)
        if len(items) != len(chars):  # pypinyin merged/split something: check the word as a whole
            items_by_char = [None] * len(chars)
        else:
            items_by_char = items
        for i, ch in enumerate(chars):
            item = items_by_char[i]
            reason = _why_unmapped(ch, item, g2p, tokens, tokenizer)
            if reason:
                out.append(Unmapped(text[pos + i], pos + i, reason))
        pos += len(chars)
    return out


def _why_unmapped(ch: str, item: str | None, g2p, tokens: set, tokenizer) -> str | None:
    if ch.isspace():
        return None
    if item is None:
        return "pypinyin returned a different number of readings than characters"
    if _is_han(ch) and item == ch:
        return "no pinyin reading known for this character"
    if item and item[-1] in g2p.tone_dict and len(item) > 1 and item[:-1].isalpha():
        if item[:-1] not in g2p.phoneme_dict:
            return f"pinyin syllable '{item[:-1]}' is not in the dictionary"
        return None
    if item in g2p.ascii_letter_dict:
        return None if g2p.ascii_letter_dict[item] in tokens else "letter not in the tokenizer"
    if item in tokenizer.PUNCT_LIST:
        return None
    if ch.isdigit():
        return "digits have no reading: write the number in Chinese characters"
    return "symbol not in the tokenizer's punctuation or phoneme set"


def describe_unmapped(problems: list[Unmapped]) -> str:
    return "; ".join(f"'{p.char}' at {p.position}: {p.reason}" for p in problems)


def check_text(text: str, tokenizer, where: str) -> None:
    """Raise (naming `where`) if any character of `text` would be dropped."""
    problems = unmapped_characters(text, tokenizer)
    if problems:
        raise HackathonError(f"{where}: {len(problems)} character(s) of {text!r} have no phonemes: "
                             f"{describe_unmapped(problems)}",
                             fix="Rewrite those characters in Chinese characters (numbers, dates, times, units and "
                                 "Latin letters are normalised already), or use a spec whose data contains them.")


def phonemes_of(text: str, tokenizer) -> list[str]:
    return [tokenizer.tokens[i] for i in tokenizer.encode(text)]


# ---------------------------------------------------------------- stage

def g2p_stage(ctx) -> None:
    """Write the dictionary, check every transcript, write manifests without the clips that cannot map.

    Transcripts are normalised first (tasks/tts/normalize.py); the result is the manifests' `normalized_text`,
    which NeMo's TTSDataset tokenizes instead of `text` (kept as written, for ASR-CER).
    Output: g2p/pinyin_dict.txt, g2p/{train,val,test}.json (clips whose text maps fully, with the phoneme
    string added for inspection) and g2p/report.json listing each excluded clip and character.
    """
    from data_tools.manifest import read_manifest
    from hackathon.core.atomic import atomic_write_jsonl
    from tasks.tts.normalize import normalize_text

    dict_path = write_pinyin_dict(ctx.path("g2p", "pinyin_dict.txt"))
    tokenizer = make_tokenizer(dict_path, ctx.cfg.g2p)
    report = {"dictionary": str(dict_path.relative_to(ctx.run_dir)), "syllables": _count_entries(dict_path),
              "vocabulary_size": len(tokenizer.tokens), "excluded": [], "unmapped_characters": {}}
    for split in ("train", "val", "test"):
        kept = []
        for row in (e.to_dict() for e in read_manifest(ctx.path("data", f"{split}.json"))):
            spoken = normalize_text(row["text"])  # "3号楼" -> "三号楼": what FastPitch reads (normalized_text)
            problems = unmapped_characters(spoken, tokenizer)
            if problems:
                report["excluded"].append({"split": split, "audio_filepath": row["audio_filepath"],
                                           "text": row["text"], "normalized_text": spoken,
                                           "problems": describe_unmapped(problems)})
                for p in problems:
                    report["unmapped_characters"][p.char] = p.reason
                continue
            kept.append({**row, "normalized_text": spoken, "phonemes": " ".join(phonemes_of(spoken, tokenizer))})
        if split == "train" and not kept:
            atomic_write_json(ctx.path("g2p", "report.json"), report)
            raise HackathonError("No training clip has a transcript that maps fully to phonemes "
                                 f"(see {ctx.path('g2p', 'report.json')}).",
                                 fix="Check the manifest's text field: Chinese characters, no digits.")
        atomic_write_jsonl(ctx.path("g2p", f"{split}.json"), kept)
        report[f"{split}_clips"] = len(kept)
    atomic_write_json(ctx.path("g2p", "report.json"), report)
    if report["excluded"]:
        ctx.log.warning("g2p: %d clip(s) excluded, characters without phonemes: %s (see g2p/report.json)",
                        len(report["excluded"]), "".join(sorted(report["unmapped_characters"])))
    ctx.record(excluded_clips=len(report["excluded"]), vocabulary_size=report["vocabulary_size"])


def _count_entries(dict_path: Path) -> int:
    return sum(1 for line in dict_path.read_text(encoding="utf-8").splitlines() if line and not line.startswith(";;;"))

