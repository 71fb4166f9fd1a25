"""CTranslate2 Whisper folder -> transformers WhisperForConditionalGeneration folder.

peft/LoRA needs a torch module; the packaged weights are CTranslate2's model.bin. Layout of that file
(format version 6, as written by ctranslate2.specs.model_spec; read from the converter in the venv):
    uint32 version | string spec name | uint32 revision | uint32 n_vars
    n_vars x (string name | uint8 rank | rank x uint32 dim | uint8 dtype | uint32 n_bytes | bytes)
    uint32 n_aliases | n_aliases x (string alias | string target)
strings are uint16 length (including a trailing NUL) + bytes; dtype ids: float32, int8, int16, int32,
float16, bfloat16. CTranslate2's Whisper converter (BartLoader.set_attention) stores self-attention
q/k/v as ONE fused linear (rows q | k | v; k has no bias in Whisper, so its bias rows are zeros) and
cross-attention as q (linear_0) and fused k|v (linear_1); the output projection is the last linear.
Weights are float16 in the packaged model and become float32 here (training and the logits check run
in float32; the logits tolerance is stated in tests/asr/test_whisper_convert.py).

The converted folder (config.json, generation_config.json, model.safetensors, tokenizer files,
preprocessor_config.json) is cached beside the source, keyed by the sha256 of model.bin.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from hackathon.core.atomic import atomic_dir, atomic_write_json, read_json
from hackathon.core.errors import HackathonError

DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, None)  # None: bfloat16 (handled below)
SUPPORTED_VERSION = 6
STAMP_FILE = "hackathon_converted.json"
CONVERTER_VERSION = 1  # bump when the output changes, so cached conversions are redone
NON_LANGUAGE_TOKENS = {"<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
                       "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>", "<|nospeech|>"}


def read_ct2_variables(model_bin: Path) -> dict[str, np.ndarray]:
    """All variables of a CTranslate2 model.bin (aliases resolved to the same array)."""
    data = Path(model_bin).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    def string() -> str:
        nonlocal pos
        (n,) = take("<H")
        s = data[pos:pos + n - 1].decode("utf-8")
        pos += n
        return s

    (version,) = take("<I")
    if version != SUPPORTED_VERSION:
        raise HackathonError(f"{model_bin}: CTranslate2 binary version {version} (this converter reads {SUPPORTED_VERSION}).",
                             fix="Re-convert the model with ctranslate2 4.x, or pass a transformers folder instead.")
    spec = string()
    if spec != "WhisperSpec":
        raise HackathonError(f"{model_bin} is a {spec}, not a Whisper model.", fix="Pass a CTranslate2 Whisper folder.")
    take("<I")  # revision
    (n_vars,) = take("<I")
    out: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = string()
        (rank,) = take("<B")
        dims = take("<" + "I" * rank) if rank else ()
        (dtype_id,) = take("<B")
        (n_bytes,) = take("<I")
        raw = data[pos:pos + n_bytes]
        pos += n_bytes
        if DTYPES[dtype_id] is None:  # bfloat16: the high half of a float32
            arr = (np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[dtype_id])
        out[name] = arr.reshape(dims)
    (n_alias,) = take("<I")
    for _ in range(n_alias):
        alias, target = string(), string()
        out[alias] = out[target]
    return out


def _count_layers(variables: dict, prefix: str) -> int:
    return len({k.split("/")[1] for k in variables
                if k.startswith(prefix + "/layer_") and k.split("/")[1][len("layer_"):].isdigit()})


def whisper_config(variables: dict, ct2_config: dict):
    from transformers import WhisperConfig

    d_model = variables["encoder/conv1/weight"].shape[0]
    return WhisperConfig(
        vocab_size=variables["decoder/embeddings/weight"].shape[0],
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        scale_embedding=bool(variables.get("decoder/scale_embeddings", np.array(0)).item() not in (0, 1)),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        decoder_start_token_id=50258, pad_token_id=50257, bos_token_id=50257, eos_token_id=50257,
        tie_word_embeddings=True,
    )


def _linear(state: dict, hf: str, weight: np.ndarray, bias: np.ndarray | None) -> None:
    state[f"{hf}.weight"] = weight
    if bias is not None:
        state[f"{hf}.bias"] = bias


def _attention(state: dict, v: dict, ct2: str, hf: str, fused_qkv: bool, d: int) -> None:
    """Split CTranslate2's fused projections back into q_proj/k_proj/v_proj/out_proj."""
    if fused_qkv:
        w, b = v[f"{ct2}/linear_0/weight"], v[f"{ct2}/linear_0/bias"]
        q, k, val = (w[:d], b[:d]), (w[d:2 * d], None), (w[2 * d:], b[2 * d:])
        out = f"{ct2}/linear_1"
    else:
        q = (v[f"{ct2}/linear_0/weight"], v[f"{ct2}/linear_0/bias"])
        w, b = v[f"{ct2}/linear_1/weight"], v[f"{ct2}/linear_1/bias"]
        k, val = (w[:d], None), (w[d:], b[d:])
        out = f"{ct2}/linear_2"
    _linear(state, f"{hf}.q_proj", *q)
    _linear(state, f"{hf}.k_proj", *k)
    _linear(state, f"{hf}.v_proj", *val)
    _linear(state, f"{hf}.out_proj", v[f"{out}/weight"], v[f"{out}/bias"])


def _layer_norm(state: dict, v: dict, ct2: str, hf: str) -> None:
    state[f"{hf}.weight"], state[f"{hf}.bias"] = v[f"{ct2}/gamma"], v[f"{ct2}/beta"]


def _ffn(state: dict, v: dict, ct2: str, hf: str) -> None:
    _linear(state, f"{hf}.fc1", v[f"{ct2}/linear_0/weight"], v[f"{ct2}/linear_0/bias"])
    _linear(state, f"{hf}.fc2", v[f"{ct2}/linear_1/weight"], v[f"{ct2}/linear_1/bias"])
    _layer_norm(state, v, f"{ct2}/layer_norm", f"{hf}.final_layer_norm")


def ct2_to_state_dict(v: dict, config) -> dict[str, np.ndarray]:
    """transformers parameter names -> float32 arrays."""
    d = config.d_model
    s: dict[str, np.ndarray] = {}
    enc, dec = "model.encoder", "model.decoder"
    for i in (1, 2):
        _linear(s, f"{enc}.conv{i}", v[f"encoder/conv{i}/weight"], v[f"encoder/conv{i}/bias"])
    s[f"{enc}.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(config.encoder_layers):
        ct2, hf = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _attention(s, v, f"{ct2}/self_attention", f"{hf}.self_attn", True, d)
        _layer_norm(s, v, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        _ffn(s, v, f"{ct2}/ffn", hf)
    _layer_norm(s, v, "encoder/layer_norm", f"{enc}.layer_norm")
    s[f"{dec}.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    s[f"{dec}.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(config.decoder_layers):
        ct2, hf = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _attention(s, v, f"{ct2}/self_attention", f"{hf}.self_attn", True, d)
        _layer_norm(s, v, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        _attention(s, v, f"{ct2}/attention", f"{hf}.encoder_attn", False, d)
        _layer_norm(s, v, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        _ffn(s, v, f"{ct2}/ffn", hf)
    _layer_norm(s, v, "decoder/layer_norm", f"{dec}.layer_norm")
    return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in s.items()}


def generation_settings(ct2_config: dict, tokenizer_json: dict) -> dict:
    """generation_config.json for a multilingual Whisper: language/task ids read from the tokenizer."""
    ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    lang_ids = set(ct2_config.get("lang_ids") or [])
    lang_to_id = {tok: i for tok, i in ids.items() if (i in lang_ids if lang_ids else tok not in NON_LANGUAGE_TOKENS
                                                                      and len(tok) <= 9 and not tok[2:3].isdigit())}
    return {
        "decoder_start_token_id": ids["<|startoftranscript|>"], "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"], "bos_token_id": ids["<|endoftext|>"],
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        "lang_to_id": dict(sorted(lang_to_id.items(), key=lambda kv: kv[1])),
        "is_multilingual": True, "max_length": 448,
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [])),
        "alignment_heads": ct2_config.get("alignment_heads"),
    }


def write_tokenizer_files(tokenizer_file: Path, out_dir: Path) -> None:
    """tokenizer.json as is, plus the config files transformers' AutoTokenizer and AutoFeatureExtractor
    need (ctranslate2's TransformersConverter loads the tokenizer when the merged model is exported)."""
    import shutil

    shutil.copyfile(tokenizer_file, out_dir / "tokenizer.json")
    atomic_write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "WhisperTokenizer", "model_max_length": 1024, "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "add_prefix_space": False, "errors": "replace"})
    atomic_write_json(out_dir / "preprocessor_config.json", {
        "feature_extractor_type": "WhisperFeatureExtractor", "processor_class": "WhisperProcessor",
        "feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "chunk_length": 30,
        "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": False})


def convert_ct2_to_transformers(ct2_dir: Path, out_dir: Path) -> Path:
    """Write a transformers Whisper folder for the CTranslate2 folder `ct2_dir` (atomic)."""
    import torch
    from safetensors.torch import save_file

    ct2_dir = Path(ct2_dir)
    ct2_config = read_json(ct2_dir / "config.json", default={}) or {}
    tokenizer_file = ct2_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise HackathonError(f"{ct2_dir} has no tokenizer.json.", fix="Copy the model's tokenizer.json into the folder.")
    variables = read_ct2_variables(ct2_dir / "model.bin")
    config = whisper_config(variables, ct2_config)
    state = ct2_to_state_dict(variables, config)
    tokenizer_json = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    with atomic_dir(out_dir) as tmp:
        config.save_pretrained(tmp)
        save_file({k: torch.from_numpy(a) for k, a in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        atomic_write_json(tmp / "generation_config.json", generation_settings(ct2_config, tokenizer_json))
        write_tokenizer_files(tokenizer_file, tmp)
    return Path(out_dir)


def converted_dir(ct2_dir: Path, log=None) -> Path:
    """The cached transformers conversion of `ct2_dir` (converted on first use)."""
    from hackathon.core.fingerprint import file_sha256
    from tasks.asr.whisper_lora.weights import cache_root

    ct2_dir = Path(ct2_dir)
    stamp = read_json(ct2_dir / "hackathon_stamp.json", default=None) or {}
    digest = stamp.get("sha256") or file_sha256(ct2_dir / "model.bin")
    target = cache_root() / f"whisper-transformers-{digest[:16]}"
    done = read_json(target / STAMP_FILE, default=None)
    if done and done.get("source_sha256") == digest and done.get("converter_version") == CONVERTER_VERSION:
        return target
    if log:
        log.info("converting CTranslate2 Whisper %s -> transformers %s", ct2_dir, target)
    convert_ct2_to_transformers(ct2_dir, target)
    atomic_write_json(target / STAMP_FILE, {"source": str(ct2_dir), "source_sha256": digest,
                                            "converter_version": CONVERTER_VERSION})
    return target
