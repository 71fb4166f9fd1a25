"""`hackathon run tts`: prepare -> g2p -> sup_data -> fastpitch -> mels -> hifigan -> export -> synthesize -> evaluate -> score.

Each stage reads what it needs from the run directory (never from memory of an earlier stage), so a
kill -9 anywhere is followed by the same command picking up where it stopped. Stage functions live in
one module per stage; heavy imports (NeMo, torch, onnxruntime) happen inside them.
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.paths import data_sources
from hackathon.core.runner import Stage


def _prepare(ctx):
    from tasks.tts.prepare import prepare_stage

    prepare_stage(ctx)


def _g2p(ctx):
    from tasks.tts.g2p import g2p_stage

    g2p_stage(ctx)


def _sup_data(ctx):
    from tasks.tts.sup_data import sup_data_stage

    sup_data_stage(ctx)


def _fastpitch(ctx):
    from tasks.tts.fastpitch import fastpitch_stage

    fastpitch_stage(ctx)


def _mels(ctx):
    from tasks.tts.mels import mels_stage

    mels_stage(ctx)


def _hifigan(ctx):
    from tasks.tts.hifigan import hifigan_stage

    hifigan_stage(ctx)


def _export(ctx):
    from tasks.tts.export import export_stage

    export_stage(ctx)


def _synthesize(ctx):
    from tasks.tts.synthesize import synthesize_stage

    synthesize_stage(ctx)


def _evaluate(ctx):
    from tasks.tts.evaluate import evaluate_stage

    evaluate_stage(ctx)


def _score(ctx):
    from tasks.tts.evaluate import score_stage

    score_stage(ctx)


def _source_inputs(ctx):
    """The user's data folder (content of its manifests decides whether prepare re-runs)."""
    return data_sources(ctx.cfg.data.source)


def _model_config_inputs(section: str):
    """The model config and, when `init` is a file, that file (a new init re-runs the stage)."""
    def inputs(ctx):
        from hackathon.core.init_weights import kind_of
        from tasks.tts.model_config import model_config_path

        init = ctx.cfg[section].get("init")
        files = [Path(str(init)).expanduser()] if kind_of(init) == "file" else []
        return [model_config_path(ctx.cfg[section]), *files]

    return inputs


def build_stages(cfg) -> list[Stage]:
    return [
        Stage("prepare", _prepare, "data", config_keys=("data",), inputs=_source_inputs),
        Stage("g2p", _g2p, "data", config_keys=("g2p",)),
        Stage("sup_data", _sup_data, "data", config_keys=("sup_data", "data.min_duration", "data.max_duration")),
        Stage("fastpitch", _fastpitch, "train", trainer="fastpitch.trainer", config_keys=("seed", "fastpitch"), inputs=_model_config_inputs("fastpitch")),
        Stage("mels", _mels, "data", config_keys=("hifigan.enabled",)),
        Stage("hifigan", _hifigan, "train", trainer="hifigan.trainer", config_keys=("seed", "hifigan"), inputs=_model_config_inputs("hifigan")),
        Stage("export", _export, "export", config_keys=("export", "synthesize.pace")),
        Stage("synthesize", _synthesize, "evaluate", config_keys=("vocoder", "griffin_lim", "synthesize")),
        Stage("evaluate", _evaluate, "evaluate", config_keys=("evaluate",)),
        Stage("score", _score, "report"),
    ]
