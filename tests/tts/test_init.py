"""`fastpitch.init` / `hifigan.init`: a second tiny run starts from the first run's .nemo files (weights equal
at step 0, tokens it lacks remapped and named before training, first loss far below scratch's); a hub name
is taken from NeMo's cache with no network, or refused offline with the cache path; a vocoder of other
mels than the data is refused before any work. Run under `flock /tmp/cpu.lock`."""

from __future__ import annotations

import csv
import json
import shutil
import urllib.request

import pytest

from hackathon.core.errors import HackathonError
from tests.tts.conftest import TINY_FASTPITCH

OVERRIDES = [*TINY_FASTPITCH, "fastpitch.trainer.max_steps=80", "fastpitch.trainer.max_time=null",
             "fastpitch.warmup_steps=10", "fastpitch.trainer.lr=5e-3",
             "fastpitch.trainer.check_val_every_n_epoch=100", "hifigan.enabled=true", "hifigan.trainer.batch_size=2",
             "hifigan.trainer.pretrain_steps=1", "hifigan.trainer.finetune_steps=1",
             # NeMo's debug discriminators and a narrow generator: a HiFiGAN step in about a second.
             "+hifigan.model_overrides.model.debug=true",
             "+hifigan.model_overrides.model.generator.upsample_initial_channel=32"]
TRAINING = 6  # prepare, g2p, sup_data, fastpitch, mels, hifigan: the stages that make the two models


def start(run_dir, corpus, *extra):
    from hackathon.core.runner import prepare_run

    return prepare_run("tts", [f"data.source={corpus}", *OVERRIDES, *extra], run_dir=run_dir)


def train(run_dir, corpus, *extra):
    from hackathon.core.runner import execute_stages
    from tasks.tts.pipeline import build_stages

    ctx = start(run_dir, corpus, *extra)
    execute_stages(ctx, build_stages(ctx.cfg)[:TRAINING])
    return ctx


def first_loss(run_dir) -> float:
    rows = csv.DictReader((next((run_dir / "logs" / "fastpitch").glob("*/metrics.csv"))).open())
    return float(next(r["t_loss"] for r in rows if r.get("t_loss")))


@pytest.fixture(scope="module")
def scratch(corpus, tmp_path_factory):
    return train(tmp_path_factory.mktemp("scratch") / "run", corpus).run_dir


@pytest.mark.slow
def test_second_run_fine_tunes_from_the_first_runs_files(scratch, corpus, tmp_path):
    import torch
    from nemo.collections.tts.models import FastPitchModel, HifiGanModel

    from hackathon.core.nemo_models import load_init_model
    from hackathon.core.report import write_run_report
    from tasks.tts import fastpitch, hifigan

    fp_file, hg_file = scratch / "models" / "fastpitch.nemo", scratch / "models" / "hifigan.nemo"
    # Tones spelled "tone1".."tone5" instead of "#1": tokens the init lacks.
    extra = (f"fastpitch.init={fp_file}", f"hifigan.init={hg_file}", "g2p.tone_prefix=tone")
    ctx = train(tmp_path / "run", corpus, *extra)
    run = ctx.run_dir
    tones = [f"tone{i}" for i in range(1, 6)]
    report = json.loads((run / "models" / "fastpitch_init.json").read_text())
    assert report["tokenizer"] == "remapped" and report["new_tokens"] == tones
    assert json.loads((run / "meta.json").read_text())["stages"]["fastpitch"]["new_tokens"] == tones
    hparams = next((run / "logs" / "fastpitch").glob("*/hparams.yaml"))  # written when training starts
    assert (run / "models" / "fastpitch_init.json").stat().st_mtime <= hparams.stat().st_mtime

    # Step-0 weights: what the stage builds equals the init, the embedding remapped row by token.
    init = load_init_model(FastPitchModel, fp_file)
    state, _ = fastpitch.load_init(ctx)
    built = fastpitch.build_fastpitch(fastpitch.fastpitch_config(ctx), None, 4, state).state_dict()
    theirs = init.state_dict()
    assert all(torch.equal(built[k], theirs[k]) for k in theirs if k != fastpitch.EMBEDDING)
    ours_tokens, init_tokens = built_tokens(ctx), list(init.vocab.tokens)
    for i, token in enumerate(ours_tokens):
        if token in init_tokens:
            assert torch.equal(built[fastpitch.EMBEDDING][i], theirs[fastpitch.EMBEDDING][init_tokens.index(token)])
    vocoder = {"state": load_init_model(HifiGanModel, hg_file).state_dict()}
    hg = hifigan.build_hifigan(hifigan.hifigan_config(ctx, "finetune", 1), None, 2, init=vocoder).state_dict()
    assert all(torch.equal(hg[k], v) for k, v in vocoder["state"].items()) and vocoder["new"] == []

    assert first_loss(run) < 0.6 * first_loss(scratch), (first_loss(run), first_loss(scratch))
    assert not (run / "checkpoints" / "hifigan_pretrain").exists()  # a pretrained vocoder is only fine-tuned
    assert (run / "models" / "hifigan.nemo").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    for name, file in (("fastpitch", fp_file), ("hifigan", hg_file)):
        rec = metrics["init"][name]
        assert rec["kind"] == "file" and rec["source"] == str(file.resolve()) and rec["loaded"] > 0
        assert rec["sha256"] == __import__("hashlib").sha256(file.read_bytes()).hexdigest()
        assert meta["stages"][name]["init"][name] == rec
    assert metrics["init"]["hifigan"]["new"] == []
    assert json.loads((scratch / "metrics.json").read_text())["init"]["fastpitch"]["kind"] == "scratch"
    page = write_run_report(run).read_text()
    assert "Where the weights started" in page and metrics["init"]["hifigan"]["sha256"][:16] in page


def built_tokens(ctx) -> list[str]:
    from tasks.tts.g2p import make_tokenizer

    return list(make_tokenizer(ctx.path("g2p", "pinyin_dict.txt"), ctx.cfg.g2p).tokens)


@pytest.mark.slow
def test_hub_name_cached_offline_and_refused(scratch, corpus, tmp_path, monkeypatch):
    from nemo.collections.tts.models import HifiGanModel

    from hackathon.core.nemo_models import nemo_cache_file, pretrained_file
    from tasks.tts.model_config import check_sample_rates

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setenv("NEMO_CACHE_DIR", str(tmp_path / "nemo_cache"))
    monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
    monkeypatch.setattr("nemo.utils.cloud.sleep", lambda s: None)
    name = "tts_zh_hifigan_sfspeech"
    cached = nemo_cache_file(HifiGanModel, name)
    with pytest.raises(HackathonError) as err:
        pretrained_file(HifiGanModel, name, "HiFiGAN", "hifigan.init")
    assert name in err.value.message and str(cached) in err.value.fix and "hifigan.init=scratch" in err.value.fix

    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(scratch / "models" / "hifigan.nemo", cached)  # a teammate's download, dropped into the cache
    assert pretrained_file(HifiGanModel, name, "HiFiGAN", "hifigan.init") == cached
    cfg = start(tmp_path / "hub", corpus, f"hifigan.init={name}").cfg
    check_sample_rates(cfg)  # the vocoder's config read from the cache and checked, with no network

    # The same 22.05 kHz vocoder for 44.1 kHz data: refused before any work, with the fix.
    ctx = start(tmp_path / "44k", corpus, "data.sample_rate=44100", f"hifigan.init={name}")
    from hackathon.core.runner import execute_stages
    from tasks.tts.pipeline import build_stages

    with pytest.raises(HackathonError) as err:
        execute_stages(ctx, build_stages(ctx.cfg)[:1])
    assert "22050" in err.value.message and "hifigan.init=tts_en_hifitts_hifigan_ft_fastpitch" in err.value.fix
    assert not (ctx.run_dir / "data").exists() and not (ctx.run_dir / "stages" / "prepare.done").exists()
