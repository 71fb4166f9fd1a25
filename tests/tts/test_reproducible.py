"""Same command + seed = same FastPitch: the demo budget is steps, not wall-clock (issue 15, item 4)."""

from __future__ import annotations

import json

import pytest

from tests.tts.conftest import TINY_FASTPITCH

pytestmark = pytest.mark.slow  # trains FastPitch twice (a few steps); run under the CPU flock


def train_until_fastpitch(run_dir, corpus, cache_dir):
    from hackathon.core.runner import execute_stages, prepare_run
    from tasks.tts.pipeline import build_stages

    overrides = [f"data.source={corpus}", *TINY_FASTPITCH, "fastpitch.trainer.max_steps=6",
                 "fastpitch.trainer.max_epochs=-1", "fastpitch.trainer.check_val_every_n_epoch=2",
                 f"sup_data.cache_dir={cache_dir}", "sup_data.workers=1"]
    ctx = prepare_run("tts", overrides, run_dir=run_dir)
    stages = build_stages(ctx.cfg)
    execute_stages(ctx, stages[:[s.name for s in stages].index("fastpitch") + 1], echo=lambda _: None)
    return ctx


def test_two_runs_same_seed_same_steps_same_weights(corpus, tmp_path):
    import torch

    runs = [train_until_fastpitch(tmp_path / f"run{i}", corpus, tmp_path / "pitch_cache") for i in (1, 2)]
    metrics = [json.loads((ctx.run_dir / "metrics.json").read_text()) for ctx in runs]
    assert metrics[0]["fastpitch_steps"] == metrics[1]["fastpitch_steps"] == 6
    assert metrics[0]["fastpitch_cut_by_time"] is False and metrics[0]["fastpitch_max_steps"] == 6
    states = [torch.load(ctx.run_dir / "checkpoints" / "fastpitch" / "last.ckpt", map_location="cpu",
                         weights_only=False)["state_dict"] for ctx in runs]
    assert states[0].keys() == states[1].keys()
    differing = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    assert not differing, differing[:5]
    # ...and the weights did move from their (seeded) initialisation: the comparison is not vacuous.
    curves = [(ctx.run_dir / "logs" / "fastpitch" / "attempt-1" / "metrics.csv").read_text() for ctx in runs]
    assert curves[0] == curves[1] and "loss" in curves[0]
