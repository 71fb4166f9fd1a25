"""The CTranslate2 -> transformers conversion of packaged:base is faithful (slow: runs Whisper-base).

- transcripts: our greedy decoder on the converted model == faster-whisper on the CTranslate2 original,
  on 6 real speech clips (espeak-ng demo clips, 3 phrases x 2 held-out voices);
- logits: the same features through both models (ctranslate2's return_logits_vocab vs the transformers
  forward, teacher-forced on CTranslate2's own tokens): max |difference| <= LOGITS_ATOL. Stated
  tolerance: 0.02 — both run float32 math on the same float16-stored weights, so only summation order
  differs (measured here: ~1e-3); a wrong q/k/v split or a missing bias gives differences of whole units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

LOGITS_ATOL = 0.02
N_CLIPS = 6


@pytest.fixture(scope="module")
def demo_clips(tmp_path_factory):
    from data_tools.manifest import read_manifest
    from data_tools.speech_synth import synth_speech
    from tasks.asr.whisper_lora.decode import load_clip

    root = Path(synth_speech("asr", tmp_path_factory.mktemp("whisper-demo") / "asr", seed=0, renditions=1,
                             noise=True)["out_dir"])
    entries = read_manifest(root / "test_manifest.json")
    picked = [e for e in entries if int(e.audio_filepath.rsplit("_p", 1)[1][:2]) in (0, 3, 6)][:N_CLIPS]
    assert len(picked) == N_CLIPS
    return [(e.text, load_clip(e.audio_filepath)) for e in picked]


@pytest.fixture(scope="module")
def models():
    import torch

    from tasks.asr.whisper_lora.decode import load_faster_whisper, load_tokens
    from tasks.asr.whisper_lora.model import load_whisper
    from tasks.asr.whisper_lora.weights import packaged_ct2_dir, transformers_dir

    torch.set_num_threads(2)
    hf_dir = transformers_dir("packaged:base")
    hf = load_whisper(hf_dir)
    return {"hf": hf, "tokens": load_tokens(hf_dir), "ct2_dir": packaged_ct2_dir("base"),
            "fw": load_faster_whisper(packaged_ct2_dir("base"), compute_type="float32")}


def test_converted_model_transcribes_like_faster_whisper(demo_clips, models):
    from tasks.asr.whisper_lora.decode import faster_whisper_text, log_mel, transcribe_features

    clips = [c for _, c in demo_clips]
    ours = transcribe_features(models["hf"], log_mel(clips), models["tokens"], "zh")
    theirs = [faster_whisper_text(models["fw"], c, "zh") for c in clips]
    assert all(t for t in theirs)  # real speech: faster-whisper hears something in every clip
    assert ours == theirs


def test_converted_logits_match_ctranslate2(demo_clips, models):
    import ctranslate2
    import torch

    from tasks.asr.whisper_lora.decode import log_mel

    feats = log_mel([c for _, c in demo_clips[:3]])
    tokens = models["tokens"]
    prompt = tokens.prompt("zh")
    ct2 = models["fw"].model
    results = ct2.generate(ctranslate2.StorageView.from_array(feats), [prompt] * len(feats), beam_size=1,
                           max_length=64, return_logits_vocab=True, suppress_blank=False, suppress_tokens=[])
    worst = 0.0
    for i, res in enumerate(results):
        ids = res.sequences_ids[0]
        ct2_logits = np.stack([np.asarray(step, dtype=np.float32).reshape(-1) for step in res.logits[0]])
        with torch.inference_mode():
            hf_logits = models["hf"](input_features=torch.from_numpy(feats[i:i + 1]),
                                     decoder_input_ids=torch.tensor([prompt + ids])).logits[0].numpy()
        hf_steps = hf_logits[len(prompt) - 1:len(prompt) - 1 + len(ct2_logits)]
        assert hf_steps.shape == ct2_logits.shape and len(ct2_logits) >= 3
        worst = max(worst, float(np.abs(hf_steps - ct2_logits).max()))
        assert (hf_steps.argmax(-1) == ct2_logits.argmax(-1)).all()
    assert worst <= LOGITS_ATOL, f"max |logit difference| {worst}"
