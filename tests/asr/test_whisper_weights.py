"""whisper_lora quick checks: packaged:base hash check, offline Hub error, backend spec selection, averaging."""

from __future__ import annotations

import pytest

from hackathon.core.errors import HackathonError


def test_corrupted_packaged_part_is_refused_and_nothing_is_cached(tmp_path):
    from tasks.asr.whisper_lora.weights import PACKAGED_MODELS, assemble_ct2, packaged_files

    parts, files = packaged_files("base")
    bad = tmp_path / "model.bin.part2"
    data = bytearray(parts[1].read_bytes()[:4096])
    data[100] ^= 0xFF  # one flipped byte in a truncated second half
    bad.write_bytes(bytes(data))
    target = tmp_path / "cache" / "whisper-base-ct2"
    with pytest.raises(HackathonError) as err:
        assemble_ct2([parts[0], bad], files, target, PACKAGED_MODELS["base"]["sha256"])
    assert "corrupted" in err.value.message and "pip install --force-reinstall" in err.value.fix
    assert not target.exists() and not any((tmp_path / "cache").iterdir())  # no half-written folder left


def test_packaged_base_assembles_with_the_published_hash(tmp_path, monkeypatch):
    from hackathon.core.fingerprint import file_sha256
    from tasks.asr.whisper_lora.weights import STAMP_FILE, packaged_ct2_dir

    monkeypatch.setenv("HACKATHON_CACHE", str(tmp_path))
    ct2 = packaged_ct2_dir("base")
    assert file_sha256(ct2 / "model.bin") == "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    assert {p.name for p in ct2.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt", STAMP_FILE}
    mtime = (ct2 / "model.bin").stat().st_mtime_ns
    assert packaged_ct2_dir("base") == ct2 and (ct2 / "model.bin").stat().st_mtime_ns == mtime  # cached, not redone


def test_offline_hub_name_gives_a_fix(monkeypatch):
    from tasks.asr.whisper_lora.weights import transformers_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the network call is refused before any socket is opened
    with pytest.raises(HackathonError) as err:
        transformers_dir("openai/whisper-large-v2")
    assert "Hugging Face Hub" in err.value.message and "packaged:base" in err.value.fix


def test_missing_local_folder_and_unknown_packaged_name(tmp_path):
    from tasks.asr.whisper_lora.weights import packaged_ct2_dir, transformers_dir

    with pytest.raises(HackathonError, match="does not exist"):
        transformers_dir(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(HackathonError, match="neither a CTranslate2"):
        transformers_dir(str(tmp_path / "empty"))
    with pytest.raises(HackathonError, match="Unknown packaged model"):
        packaged_ct2_dir("large")


def test_backend_override_loads_the_backends_demo_spec():
    from hackathon.core.config import load_config
    from tasks.asr.pipeline import build_stages

    cfg = load_config("asr", None, ["backend=whisper_lora", "lora.r=8"])
    assert cfg.backend == "whisper_lora" and cfg.lora.r == 8 and cfg.model.init == "packaged:base"
    assert [s.name for s in build_stages(cfg)] == ["prepare", "model", "train", "evaluate", "export", "score"]
    assert build_stages(cfg)[1].fn.__module__ == "tasks.asr.whisper_lora.model"
    nemo = load_config("asr", None, [])
    assert nemo.backend == "nemo" and build_stages(nemo)[1].fn.__module__ == "tasks.asr.model"
    with pytest.raises(HackathonError, match="Unknown ASR backend"):
        build_stages(load_config("asr", None, ["backend=kaldi"]))
    with pytest.raises(HackathonError, match="model.init"):  # the old key, refused with its new name
        load_config("asr", None, ["backend=whisper_lora", "whisper.base=packaged:base"])
    assert load_config("asr", "whisper_workstation", []).trainer.lr == cfg.trainer.lr  # base: whisper_demo


def test_mean_state_dict_averages_floats_keeps_counters():
    import torch

    from tasks.asr.averaging import mean_state_dict

    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    out = mean_state_dict([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 5


def test_lr_schedule_warms_up_then_decays():
    import torch

    from hackathon.core.training import warmup_then_decay

    def factors(decay):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        factor = warmup_then_decay(opt, 4, 20, decay)["lr_scheduler"]["scheduler"].lr_lambdas[0]
        return [factor(s) for s in (0, 3, 12, 20)]

    assert factors("linear") == [0.25, 1.0, 0.5, 0.0]
    assert factors("cosine")[:2] == [0.25, 1.0] and abs(factors("cosine")[2] - 0.5) < 1e-9 and factors("cosine")[3] == 0.0


def test_epoch_order_depends_on_seed_and_epoch_only():
    """A fit resumed at epoch e (Lightning calls set_epoch) sees the batches an unbroken fit saw."""
    from tasks.asr.whisper_lora.train import EpochOrder

    order = EpochOrder(9, seed=0)
    first = list(order)
    assert sorted(first) == list(range(9)) and len(order) == 9
    order.set_epoch(1)
    second = list(order)
    resumed = EpochOrder(9, seed=0)
    resumed.set_epoch(1)
    assert second != first and list(resumed) == second


def test_cpu_never_gets_an_int8_base():
    from omegaconf import OmegaConf

    from tasks.asr.whisper_lora.model import int8_wanted

    assert int8_wanted(OmegaConf.create({"int8_base": "auto"}), cuda=False) is False
    assert int8_wanted(OmegaConf.create({"int8_base": "auto"}), cuda=True) is True
    with pytest.raises(HackathonError, match="needs a CUDA GPU"):
        int8_wanted(OmegaConf.create({"int8_base": True}), cuda=False)
