"""`hackathon run asr`: prepare -> model -> train -> evaluate -> export -> score.

`backend` picks the stage list: nemo (this folder's NeMo CTC stages) or whisper_lora
(tasks/asr/whisper_lora/: Whisper + LoRA). prepare and score are shared by both.

Each stage reads what it needs from the run dir (data/, model/, checkpoints/), so a killed run picks
up where it stopped; the runner skips stages whose config slice and inputs are unchanged.
"""

from __future__ import annotations

from hackathon.core.runner import Stage


BACKENDS = ("nemo", "whisper_lora")


def build_stages(cfg) -> list[Stage]:
    backend = str(cfg.get("backend", "nemo"))
    if backend == "whisper_lora":
        from tasks.asr.whisper_lora.pipeline import build_whisper_stages

        return build_whisper_stages(cfg)
    if backend != "nemo":
        from hackathon.core.errors import HackathonError

        raise HackathonError(f"Unknown ASR backend {backend!r}.", fix=f"Use backend= one of: {', '.join(BACKENDS)}.")
    return build_nemo_stages(cfg)


def build_nemo_stages(cfg) -> list[Stage]:
    from tasks.asr.averaging import average_stage
    from tasks.asr.evaluate import evaluate_stage, score_stage
    from tasks.asr.export import export_stage
    from tasks.asr.model import model_stage
    from tasks.asr.prepare import prepare_stage, source_inputs
    from tasks.asr.train import train_stage

    return [
        Stage("prepare", prepare_stage, "data", config_keys=("data",), inputs=source_inputs),
        Stage("model", model_stage, "model", config_keys=("seed", "model", "data.sample_rate")),
        Stage("train", train_stage, "train", trainer="trainer", config_keys=("seed", "data.max_duration", "data.min_duration",
                                                 "data.num_workers", "data.sample_rate", "model.freeze_encoder",
                                                 "optim", "trainer", "export.average_best_k")),
        Stage("evaluate", evaluate_stage, "evaluate", config_keys=("evaluate", "data.language")),
        Stage("export", export_stage, "export", config_keys=("export",)),
        Stage("average", average_stage, "export", config_keys=("export.average_best_k",)),
        Stage("score", score_stage, "report", config_keys=("evaluate.worst_n",)),
    ]
