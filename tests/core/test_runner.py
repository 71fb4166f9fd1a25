"""Stages: skip when done, re-run on config/input change, resume after interruption, --from/--only."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from hackathon.core.errors import HackathonError
from hackathon.core.runner import RunContext, Stage, execute_stages


def make_ctx(tmp_path, **cfg):
    base = {"data": {"n": 3}, "train": {"epochs": 2}}
    base.update(cfg)
    return RunContext(task="t", run_dir=tmp_path, cfg=OmegaConf.create(base), meta={"stages": {}})


def pipeline(calls, fail_in=None):
    def prepare(ctx):
        calls.append("prepare")
        ctx.path("data.txt").write_text("x" * ctx.cfg.data.n)
        ctx.set_data_fingerprint(f"n={ctx.cfg.data.n}")

    def train(ctx):
        calls.append("train")
        progress = ctx.path("progress.txt")
        done = int(progress.read_text()) if progress.exists() else 0
        if ctx.resuming:
            ctx.record(resumed_from=done)
        for epoch in range(done, ctx.cfg.train.epochs):
            if fail_in == "train" and epoch == 1:
                raise RuntimeError("killed mid-training")
            progress.write_text(str(epoch + 1))

    def evaluate(ctx):
        calls.append("evaluate")
        ctx.write_metrics({"score": int(ctx.path("progress.txt").read_text())})

    return [Stage("prepare", prepare, "data", ("data",)), Stage("train", train, "model", ("train",)),
            Stage("evaluate", evaluate, "evaluate")]


def test_second_run_skips_finished_stages(tmp_path):
    calls = []
    ctx = make_ctx(tmp_path)
    execute_stages(ctx, pipeline(calls), echo=lambda s: None)
    assert calls == ["prepare", "train", "evaluate"]
    calls.clear()
    execute_stages(ctx, pipeline(calls), echo=lambda s: None)
    assert calls == []
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"score": 2}


def test_config_change_reruns_that_stage_and_later_ones(tmp_path):
    calls = []
    execute_stages(make_ctx(tmp_path), pipeline(calls), echo=lambda s: None)
    calls.clear()
    execute_stages(make_ctx(tmp_path, train={"epochs": 3}), pipeline(calls), echo=lambda s: None)
    assert calls == ["train", "evaluate"]
    calls.clear()
    execute_stages(make_ctx(tmp_path, data={"n": 5}, train={"epochs": 3}), pipeline(calls), echo=lambda s: None)
    assert calls == ["prepare", "train", "evaluate"]


def test_interrupted_stage_resumes_and_meta_says_from_where(tmp_path):
    calls = []
    ctx = make_ctx(tmp_path)
    with pytest.raises(RuntimeError):
        execute_stages(ctx, pipeline(calls, fail_in="train"), echo=lambda s: None)
    assert ctx.meta["stages"]["train"]["status"] == "failed"
    assert (tmp_path / "progress.txt").read_text() == "1"
    calls.clear()
    execute_stages(ctx, pipeline(calls), echo=lambda s: None)
    assert calls == ["train", "evaluate"]  # prepare stays done
    entry = json.loads((tmp_path / "meta.json").read_text())["stages"]["train"]
    assert entry["status"] == "done" and entry["resumed"] is True and entry["resumed_from"] == 1
    assert entry["attempts"] == 2


def test_from_and_only_and_force(tmp_path):
    calls = []
    ctx = make_ctx(tmp_path)
    execute_stages(ctx, pipeline(calls), echo=lambda s: None)
    calls.clear()
    execute_stages(ctx, pipeline(calls), from_stage="train", echo=lambda s: None)
    assert calls == ["train", "evaluate"]
    calls.clear()
    execute_stages(ctx, pipeline(calls), only="evaluate", echo=lambda s: None)
    assert calls == ["evaluate"]
    calls.clear()
    execute_stages(ctx, pipeline(calls), force=True, echo=lambda s: None)
    assert calls == ["prepare", "train", "evaluate"]
    with pytest.raises(HackathonError, match="No stage named"):
        execute_stages(ctx, pipeline(calls), only="nope", echo=lambda s: None)


def test_input_file_change_reruns_stage(tmp_path):
    calls = []
    src = tmp_path / "input.wav"
    src.write_bytes(b"one")

    def stages():
        return [Stage("read", lambda ctx: calls.append("read"), "data", inputs=lambda ctx: [src])]

    ctx = make_ctx(tmp_path / "run")
    execute_stages(ctx, stages(), echo=lambda s: None)
    execute_stages(ctx, stages(), echo=lambda s: None)
    assert calls == ["read"]
    src.write_bytes(b"two, longer")
    execute_stages(ctx, stages(), echo=lambda s: None)
    assert calls == ["read", "read"]
