"""ASR test fixtures: a tiny spec and ONE tiny pipeline run shared by the ASR tests (package scope).

The tiny run trains a 2-block conv CTC model for 2 epochs on a 1-rendition demo corpus generated into a
private demo-data folder (the user's cached demo corpus is never touched).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def tiny_spec(path: Path, **changes) -> Path:
    """specs/asr/demo.yaml shrunk for tests (dotted `changes` applied on top)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "specs" / "asr" / "demo.yaml")
    block = {"repeat": 1, "stride": [1], "dilation": [1], "dropout": 0.0, "residual": False, "separable": True}
    cfg.model.nemo.encoder.jasper = [
        {**block, "filters": 48, "kernel": [11], "stride": [2]},
        {**block, "filters": 64, "kernel": [1], "separable": False},
    ]
    cfg.model.nemo.decoder.feat_in = 64
    cfg.data.demo.renditions = 1
    cfg.data.demo.noise = False
    cfg.trainer.batch_size = 8
    cfg.trainer.max_epochs = 2
    cfg.evaluate.worst_n = 2
    cfg.export.check_utts = 2
    cfg.export.average_best_k = 2  # both epochs kept and averaged (tests/asr/test_pipeline.py)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture(scope="package")
def asr_env(tmp_path_factory):
    """Private runs root and demo-data cache for the ASR tests (restored afterwards)."""
    base = tmp_path_factory.mktemp("asr")
    saved = {k: os.environ.get(k) for k in ("HACKATHON_DEMO_DATA", "HACKATHON_RUNS")}
    os.environ["HACKATHON_DEMO_DATA"] = str(base / "demo_data")
    os.environ["HACKATHON_RUNS"] = str(base / "runs")
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="package")
def tiny_spec_path(asr_env) -> Path:
    return tiny_spec(asr_env / "tiny.yaml")


@pytest.fixture(scope="package")
def tiny_run(asr_env, tiny_spec_path) -> Path:
    """A finished tiny `hackathon run asr` (all stages), shared by the tests that need a trained model."""
    from hackathon.core.runner import run_task

    ctx = run_task("asr", spec=str(tiny_spec_path), run_dir=asr_env / "runs" / "asr" / "tiny", echo=lambda s: None)
    return ctx.run_dir
