"""The shared `init` vocabulary: kinds, the missing-file and offline errors, the provenance record."""

from __future__ import annotations

import hashlib

import pytest

from hackathon.core.errors import HackathonError
from hackathon.core.init_weights import init_file, kind_of, load_matching, offline_error, record, record_init, summary
from hackathon.core.run_context import RunContext


def test_kinds(tmp_path):
    existing = tmp_path / "weights"
    existing.write_bytes(b"x")
    assert [kind_of(v) for v in ("scratch", None, "packaged:mobilenet_v2", "~/m.nemo", "a.ckpt", "b.pth",
                                 str(existing), "tts_zh_hifigan_sfspeech", "nvidia/parakeet")] == \
        ["scratch", "scratch", "packaged", "file", "file", "file", "file", "hub", "hub"]


def test_missing_file_and_offline_errors_name_the_field_and_fix(tmp_path):
    with pytest.raises(HackathonError) as err:
        init_file(tmp_path / "gone.nemo", "FastPitch", "fastpitch.init")
    assert "fastpitch.init=" in err.value.message and "fastpitch.init=scratch" in err.value.fix
    exc = offline_error("HiFiGAN", "tts_zh_hifigan_sfspeech", tmp_path / "cache" / "x.nemo", "hifigan.init",
                        OSError("no route"))
    assert "HiFiGAN" in exc.message and "tts_zh_hifigan_sfspeech" in exc.message and "no route" in exc.message
    assert str(tmp_path / "cache" / "x.nemo") in exc.fix and "hifigan.init=scratch" in exc.fix


def test_record_and_summary(tmp_path):
    f = tmp_path / "m.nemo"
    f.write_bytes(b"weights")
    rec = record(str(f), loaded=3, new=["head.b", "head.a", "head.a"])
    assert rec == {"kind": "file", "source": str(f.resolve()), "sha256": hashlib.sha256(b"weights").hexdigest(),
                   "loaded": 3, "new": ["head.a", "head.b"]}
    hub = record("tts_zh_hifigan_sfspeech", file=f, loaded=5)
    assert hub["kind"] == "hub" and hub["source"] == "tts_zh_hifigan_sfspeech" and hub["sha256"] == rec["sha256"]
    assert record("scratch") == {"kind": "scratch", "source": "scratch", "sha256": None, "loaded": 0, "new": []}
    assert summary({"hifigan": hub, "fastpitch": record("scratch")}) == \
        "fastpitch:scratch hifigan:hub tts_zh_hifigan_sfspeech"


def test_record_init_writes_meta_and_metrics(tmp_path):
    ctx = RunContext(task="tts", run_dir=tmp_path, cfg=None, stage="fastpitch")
    record_init(ctx, "fastpitch", record("scratch"))
    ctx.stage = "hifigan"
    record_init(ctx, "hifigan", record("tts_zh_hifigan_sfspeech"))
    assert ctx.meta["stages"]["fastpitch"]["init"]["fastpitch"]["kind"] == "scratch"
    assert sorted(ctx.read_metrics()["init"]) == ["fastpitch", "hifigan"]
    record_init(ctx, "vocoder", record("scratch"))  # a second model of one stage (detect: detector + backbone)
    assert sorted(ctx.meta["stages"]["hifigan"]["init"]) == ["hifigan", "vocoder"]


def test_load_matching_keeps_mismatched_layers_random():
    import torch

    src, dst = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)), \
        torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    head = dst[1].weight.detach().clone()
    loaded, new = load_matching(dst, src.state_dict())
    assert (loaded, new) == (2, ["1"])
    assert torch.equal(dst[0].weight, src[0].weight) and torch.equal(dst[1].weight, head)
