"""mels: FastPitch mels with ground-truth durations, the inputs HiFiGAN is fine-tuned on.

FastPitch runs teacher-forced — durations from its learned alignment against the recording, the
recording's pitch — so each predicted mel lines up frame by frame with the real audio, and HiFiGAN learns
to turn FastPitch's (slightly blurry) mels into that audio. Files are named <index>_<stem>.npy: unique even
when two clips share a basename (phrase clips of different folders). Output: mels/{train,val}/*.npy and
mels/{train,val}.json (NeMo manifests with mel_filepath). Skipped (nothing written) when HiFiGAN is off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def teacher_forced_mel(model, dataset, index: int) -> np.ndarray:
    """Predicted mel [n_mels, T] for dataset item `index`, T = the recording's mel length."""
    import torch
    from nemo.collections.tts.parts.utils.helpers import process_batch

    batch = process_batch(dataset.collate_fn([dataset[index]]), dataset.sup_data_types_set)
    with torch.no_grad():
        audio = batch["audio"].to(model.device)
        spec, spec_len = model.preprocessor(input_signal=audio, length=batch["audio_lens"].to(model.device))
        mels_pred, *_ = model(text=batch["text"].to(model.device), durs=None, pitch=batch["pitch"].to(model.device),
                              speaker=None, pace=1.0, spec=spec, attn_prior=batch["align_prior_matrix"].to(model.device),
                              mel_lens=spec_len, input_lens=batch["text_lens"].to(model.device))
    return mels_pred[0, :, : int(spec_len[0])].cpu().numpy()


def mels_stage(ctx) -> None:
    from hydra.utils import instantiate

    from hackathon.core.atomic import atomic_path, atomic_write_jsonl
    from hackathon.core.progress import track
    from tasks.tts.fastpitch import load_fastpitch

    if not ctx.cfg.hifigan.enabled:
        ctx.record(skipped="hifigan.enabled is false: no vocoder to fine-tune")
        return
    model = load_fastpitch(ctx.run_dir)
    counts = {}
    for split, ds_key in (("train", "train_ds"), ("val", "validation_ds")):
        dataset = instantiate(model.cfg[ds_key].dataset, text_tokenizer=model.vocab)
        rows = []
        for i, item in enumerate(track(dataset.data, f"mels ({split})", unit="clip")):
            mel = teacher_forced_mel(model, dataset, i)
            path = ctx.path("mels", split, f"{i:05d}_{Path(item['audio_filepath']).stem}.npy")
            with atomic_path(path, suffix=".npy") as tmp:
                np.save(tmp, mel)
            rows.append({"audio_filepath": item["audio_filepath"], "duration": item["duration"],
                         "text": item["original_text"], "mel_filepath": str(path)})
        atomic_write_jsonl(ctx.path("mels", f"{split}.json"), rows)
        counts[split] = len(rows)
    ctx.record(mels=counts)

