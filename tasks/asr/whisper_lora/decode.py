"""Whisper features, tokens and greedy decoding on a transformers (optionally peft-wrapped) model.

One decoder for the zero-shot baseline, validation, evaluate, the export checks and `asr transcribe`,
so all of them score the same thing. It mirrors faster-whisper's greedy, no-timestamps decoding
(what the conversion test compares against): prompt <|startoftranscript|><|lang|><|task|>
<|notimestamps|>, the model's suppress_tokens plus the special/timestamp tokens at every step, blank
and <|endoftext|> suppressed at the first step, stop at <|endoftext|>.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hackathon.core.atomic import read_json
from hackathon.core.errors import HackathonError

SAMPLE_RATE = 16000
MAX_NEW_TOKENS = 96  # a demo phrase is ~10-20 tokens; Whisper's hard limit is 448 minus the prompt


@dataclass
class Tokens:
    """Special token ids and the text tokenizer of one model folder."""

    tokenizer: object  # tokenizers.Tokenizer
    sot: int
    eot: int
    transcribe: int
    translate: int
    no_timestamps: int
    lang_to_id: dict
    suppress: list[int]
    begin_suppress: list[int]
    vocab_size: int

    def prompt(self, language: str, task: str = "transcribe") -> list[int]:
        key = f"<|{language}|>"
        if key not in self.lang_to_id:
            raise HackathonError(f"Whisper has no language {language!r}.",
                                 fix=f"Use a Whisper language code, e.g. zh, en (known: {len(self.lang_to_id)}).")
        return [self.sot, self.lang_to_id[key], self.transcribe if task == "transcribe" else self.translate,
                self.no_timestamps]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids if int(i) < self.eot], skip_special_tokens=True).strip()


def load_tokens(model_dir: Path) -> Tokens:
    from tokenizers import Tokenizer

    model_dir = Path(model_dir)
    gen = read_json(model_dir / "generation_config.json", default=None)
    config = read_json(model_dir / "config.json", default={}) or {}
    if not gen or not (model_dir / "tokenizer.json").is_file():
        raise HackathonError(f"{model_dir} lacks generation_config.json or tokenizer.json.",
                             fix="Use a folder written by this pipeline (model stage / export) or a complete Hub snapshot.")
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in ("<|startofprev|>", "<|startoflm|>", "<|nocaptions|>", "<|nospeech|>")}
    specials = [gen["task_to_id"]["transcribe"], gen["task_to_id"]["translate"], gen["decoder_start_token_id"],
                *(i for i in ids.values() if i is not None)]
    vocab_size = int(config.get("vocab_size") or tok.get_vocab_size())
    timestamps = list(range(gen["no_timestamps_token_id"] + 1, vocab_size))
    suppress = sorted(set(gen.get("suppress_tokens") or []) | set(specials) | set(timestamps))
    return Tokens(tokenizer=tok, sot=gen["decoder_start_token_id"], eot=gen["eos_token_id"],
                  transcribe=gen["task_to_id"]["transcribe"], translate=gen["task_to_id"]["translate"],
                  no_timestamps=gen["no_timestamps_token_id"], lang_to_id=gen["lang_to_id"], suppress=suppress,
                  begin_suppress=list(gen.get("begin_suppress_tokens") or []), vocab_size=vocab_size)


_FEATURE_EXTRACTOR = None


def log_mel(clips: list[np.ndarray]) -> np.ndarray:
    """(N, 80, 3000) float32 log-mel features, computed exactly as faster-whisper does for a clip under
    30 s (its own extractor on the clip, last frame dropped, zero-padded to 3000 frames). Training on the
    features the exported CTranslate2 model will see keeps the adapter, merged and CT2 transcripts equal.
    (transformers' extractor pads the audio before the log instead, which shifts the padded frames.)"""
    global _FEATURE_EXTRACTOR
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    if _FEATURE_EXTRACTOR is None:
        _FEATURE_EXTRACTOR = FeatureExtractor()
    frames = _FEATURE_EXTRACTOR.nb_max_frames
    out = np.zeros((len(clips), _FEATURE_EXTRACTOR.n_mels if hasattr(_FEATURE_EXTRACTOR, "n_mels") else 80, frames),
                   dtype=np.float32)
    for i, clip in enumerate(clips):
        feats = _FEATURE_EXTRACTOR(np.asarray(clip, dtype=np.float32))[:, :-1]
        out[i] = pad_or_trim(feats[:, :frames])
    return out


def load_clip(path: str) -> np.ndarray:
    from tasks.asr.transcribe import load_clip as load_any

    return load_any(path, SAMPLE_RATE)


@functools.lru_cache(maxsize=None)
def cache_argument() -> str:
    """transformers 5.x renamed the decoder's `past_key_values` argument to `cache` (the old name warns)."""
    import inspect

    from transformers import WhisperForConditionalGeneration

    return "cache" if "cache" in inspect.signature(WhisperForConditionalGeneration.forward).parameters \
        else "past_key_values"


def quiet_transformers() -> None:
    """Library chatter (weight-loading progress bars, deprecation notes) stays out of the console; the
    run log keeps our own progress lines."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def whisper_core(model):
    """The WhisperForConditionalGeneration inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def encode(model, features):
    """Encoder hidden states for a (N, 80, 3000) feature tensor."""
    core = whisper_core(model)
    param = next(core.parameters())
    return core.model.encoder(features.to(param.device, dtype=param.dtype)).last_hidden_state


def greedy_decode(model, encoder_states, tokens: Tokens, prompt: list[int],
                  max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[int]]:
    """Greedy token ids (prompt and <|endoftext|> excluded) for a batch of encoder states."""
    import torch

    device = encoder_states.device
    n = encoder_states.shape[0]
    ids = torch.tensor([prompt] * n, device=device)
    suppress = torch.tensor(tokens.suppress, device=device)
    begin = torch.tensor(tokens.begin_suppress, device=device, dtype=torch.long)
    out: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    past = None
    step_input = ids
    with torch.inference_mode():
        for step in range(max_new_tokens):
            result = model(encoder_outputs=(encoder_states,), decoder_input_ids=step_input, use_cache=True,
                           **{cache_argument(): past})
            logits = result.logits[:, -1, :].float()
            past = getattr(result, "cache", None) or result.past_key_values
            logits[:, suppress] = float("-inf")
            if step == 0 and len(begin):
                logits[:, begin] = float("-inf")
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, tokens.eot), nxt)
            for i in range(n):
                if not done[i] and int(nxt[i]) != tokens.eot:
                    out[i].append(int(nxt[i]))
            done |= nxt == tokens.eot
            if bool(done.all()):
                break
            step_input = nxt[:, None]
    return out


def transcribe_features(model, features, tokens: Tokens, language: str, task: str = "transcribe",
                        batch_size: int = 8, encoded: bool = False) -> list[str]:
    """Texts of log-mel `features`, or (encoded=True) of cached encoder states (N, 1500, d): the frozen-encoder
    path of training/validation."""
    import torch

    texts = []
    prompt = tokens.prompt(language, task)
    model.eval()
    param = next(whisper_core(model).parameters())
    for start in range(0, len(features), batch_size):
        with torch.inference_mode():
            chunk = torch.as_tensor(features[start:start + batch_size])
            states = chunk.to(param.device, dtype=param.dtype) if encoded else encode(model, chunk)
        texts += [tokens.decode(ids) for ids in greedy_decode(model, states, tokens, prompt)]
    return texts


def load_faster_whisper(ct2_dir: Path, compute_type: str = "default"):
    from faster_whisper import WhisperModel

    import torch

    return WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type, cpu_threads=max(1, torch.get_num_threads()))


def faster_whisper_text(fw_model, clip: np.ndarray, language: str, task: str = "transcribe") -> str:
    """faster-whisper's greedy transcript with the settings our decoder mirrors (no timestamps, no
    temperature fallback, no VAD, every segment kept)."""
    segments, _ = fw_model.transcribe(clip, language=language, task=task, beam_size=1, temperature=0.0,
                                      without_timestamps=True, condition_on_previous_text=False, vad_filter=False,
                                      no_speech_threshold=None, log_prob_threshold=None, compression_ratio_threshold=None)
    return "".join(s.text for s in segments).strip()


class WhisperTranscriber:
    """What `hackathon asr transcribe` loads for this backend's exports: a CTranslate2 folder
    (export/ct2, through faster-whisper) or a transformers folder (export/merged, our greedy decoder).
    Language and task come from the folder's hackathon_whisper.json (else zh / transcribe)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model_dir: Path):
        from tasks.asr.whisper_lora.weights import is_ct2_dir, is_transformers_dir

        self.model_dir = Path(model_dir)
        info = read_json(self.model_dir / "hackathon_whisper.json", default=None) or {}
        self.language, self.task = info.get("language", "zh"), info.get("task", "transcribe")
        if is_ct2_dir(self.model_dir):
            self.kind, self.model = "ct2", load_faster_whisper(self.model_dir)
        elif is_transformers_dir(self.model_dir):
            from tasks.asr.whisper_lora.model import load_whisper

            self.kind = "transformers"
            self.model = load_whisper(self.model_dir)
            self.tokens = load_tokens(self.model_dir)
        else:
            raise HackathonError(f"{self.model_dir} is not a model folder this tool reads.",
                                 fix="Pass a .nemo file, or a Whisper export folder: <run-dir>/export/ct2 or "
                                     "<run-dir>/export/merged.")

    def transcribe_clips(self, clips: list, batch_size: int) -> list[str]:
        if self.kind == "ct2":
            return [faster_whisper_text(self.model, clip, self.language, self.task) for clip in clips]
        return transcribe_features(self.model, log_mel(clips), self.tokens, self.language, self.task, batch_size)
