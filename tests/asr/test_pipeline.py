"""The tiny `hackathon run asr` (shared package fixture): outputs, Chinese targets, ONNX, transcribe, OOV."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hackathon.core.atomic import read_json

pytestmark = pytest.mark.slow  # the shared fixture trains a tiny model


def test_run_writes_metrics_predictions_and_report_assets(tiny_run):
    metrics = read_json(tiny_run / "metrics.json")
    for key in ("cer", "wer", "n_utts", "train_seconds"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["wer_unit"] == "character" and metrics["language"] == "zh"
    assert 0.0 <= metrics["cer"] and metrics["train_seconds"] > 0
    test_lines = (tiny_run / "data" / "test_manifest.json").read_text(encoding="utf-8").splitlines()
    predictions = [json.loads(x) for x in (tiny_run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert metrics["n_utts"] == len(test_lines) == len(predictions)
    assert all({"text", "pred_text", "char_errors", "cer"} <= p.keys() for p in predictions)
    # the metric is what the per-utterance rows say
    assert metrics["cer"] == pytest.approx(sum(p["char_errors"] for p in predictions) / sum(p["ref_chars"] for p in predictions))
    assets = read_json(tiny_run / "report_assets.json")
    assert {t["title"] for t in assets["tables"]} >= {"Test scores", "Worst test utterances"}
    for clip in assets["audio"]:
        assert (tiny_run / clip["path"]).is_file() and clip["text"]
    meta = read_json(tiny_run / "meta.json")
    assert [meta["stages"][s]["status"] for s in ("prepare", "model", "train", "evaluate", "export", "average",
                                                  "score")] == ["done"] * 7


def test_checkpoint_averaging_of_the_best_two_epochs(tiny_run):
    """export.average_best_k=2: both epochs' best checkpoints kept, averaged, CER before/after recorded."""
    import torch

    from tasks.asr.averaging import AVERAGED_NEMO, best_checkpoints, mean_state_dict
    from tasks.asr.model import restore_model

    metrics = read_json(tiny_run / "metrics.json")
    chosen = best_checkpoints(tiny_run / "checkpoints" / "fit", 2)
    assert metrics["average_best_k"] == len(chosen) == 2
    assert metrics["cer_before_average"] == pytest.approx(metrics["cer"])
    assert 0.0 <= metrics["cer_after_average"] <= 1.0
    averaged = restore_model(tiny_run / AVERAGED_NEMO).state_dict()
    expected = mean_state_dict([torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for _, p in chosen])
    name = next(k for k, v in expected.items() if v.is_floating_point() and "encoder" in k)
    assert torch.allclose(averaged[name], expected[name])


def test_chinese_training_targets_keep_every_character(tiny_run):
    """NeMo's loader with our dataset config turns every transcript into exactly its characters."""
    from nemo.collections.asr.data.audio_to_text_dataset import get_char_dataset
    from omegaconf import OmegaConf

    from tasks.asr.model import dataset_config, read_vocabulary_report

    cfg = OmegaConf.load(tiny_run / "config.yaml")
    labels = read_vocabulary_report(tiny_run)["vocabulary"]
    manifest = tiny_run / "data" / "train_manifest.json"
    texts = [json.loads(x)["text"] for x in manifest.read_text(encoding="utf-8").splitlines()]
    ds_cfg = dataset_config(cfg, manifest, labels, 4, shuffle=False, training=False)
    dataset = get_char_dataset(OmegaConf.to_container(ds_cfg))
    assert len(dataset) == len(texts)
    for i, text in enumerate(texts):
        tokens = dataset[i][2][: int(dataset[i][3])].tolist()
        assert "".join(labels[t] for t in tokens) == text
    assert ds_cfg.parser == "base"  # NeMo's English parser normalises text for English, not for hanzi


def test_onnx_export_parity_and_predictor_match_nemo(tiny_run):
    """export_check.json: max log-prob diff and transcript agreement (one at a time and batched); the
    predictor `serve` uses gives NeMo's text on other test clips, alone and in one padded batch."""
    from tasks.asr.model import restore_model
    from tasks.asr.onnx_infer import load
    from tasks.asr.transcribe import load_clip, transcribe_arrays

    check = read_json(tiny_run / "export" / "export_check.json")
    assert check["passed"] and check["n_inputs"] == 2 and check["agreement"]["transcripts_batched"] == "2/2"
    assert check["max_abs_diff"]["logprobs"] <= check["tolerances"]["logprobs"] == 1e-3
    metrics = read_json(tiny_run / "metrics.json")
    assert metrics["asr_export_transcript_agreement"] == 1.0
    assert metrics["asr_export_max_logprob_diff"] == check["max_abs_diff"]["logprobs"]
    assets = read_json(tiny_run / "report_assets.json")
    assert any(t["title"].startswith("Export parity") for t in assets["tables"])  # the score stage kept it
    assert {t["title"] for t in assets["tables"]} >= {"Test scores", "Worst test utterances"}

    model = restore_model(tiny_run / "export" / "asr_model.nemo")
    predictor = load(tiny_run)
    clips = [load_clip(json.loads(x)["audio_filepath"], 16000)
             for x in (tiny_run / "data" / "test_manifest.json").read_text(encoding="utf-8").splitlines()[-4:]]
    expected = transcribe_arrays(model, clips, batch_size=1)
    assert [predictor.transcribe(c) for c in clips] == expected
    assert predictor.transcribe_batch(clips) == expected


def test_predictor_without_export_says_how_to_make_it(tmp_path):
    from hackathon.core.errors import HackathonError
    from tasks.asr.onnx_infer import load

    with pytest.raises(HackathonError) as err:
        load(tmp_path)
    assert "asr_model.onnx" in err.value.message and "--only export" in err.value.fix


def test_transcribe_cli_any_format_and_bad_files(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from hackathon.cli import app

    wav = json.loads((tiny_run / "data" / "test_manifest.json").read_text(encoding="utf-8").splitlines()[0])["audio_filepath"]
    phone = {}
    for name, args in (("phone.mp3", ["-ac", "2", "-ar", "44100"]), ("laptop.flac", ["-ac", "2", "-ar", "48000"])):
        phone[name] = tmp_path / name  # other formats, rates and channel counts: resampled on the fly
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", wav, *args, str(phone[name])], check=True)
    broken = tmp_path / "broken.wav"
    broken.write_text("not audio")
    out = tmp_path / "out.jsonl"
    model_path = tiny_run / "export" / "asr_model.nemo"
    result = CliRunner().invoke(app, ["asr", "transcribe", str(model_path), wav, *map(str, phone.values()),
                                      str(broken), "--out", str(out)])
    assert result.exit_code == 2, result.output  # some inputs failed, the rest were transcribed
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    by_name = {Path(r["audio_filepath"]).name: r for r in rows}
    assert "error" in by_name["broken.wav"] and "pred_text" not in by_name["broken.wav"]
    assert all(isinstance(by_name[n].get("pred_text"), str) for n in phone)
    from tasks.asr.model import restore_model
    from tasks.asr.transcribe import load_clip, transcribe_arrays

    model = restore_model(model_path)
    assert by_name[Path(wav).name]["pred_text"] == transcribe_arrays(model, [load_clip(wav, 16000)], 1)[0]
    assert f"{wav}\t" in result.output and "broken.wav\tFAILED" in result.output
    again = CliRunner().invoke(app, ["asr", "transcribe", str(tiny_run / "export" / "asr_model.nemo"), wav, "--out", str(out)])
    assert again.exit_code != 0 and "already exists" in again.output  # never overwrites


def test_oov_characters_are_reported_not_dropped(tiny_run, tmp_path, caplog):
    """A vocabulary that lacks some characters: every missing one is counted per split and logged."""
    from hackathon.core.runner import execute_stages, pipeline_module, prepare_run

    run_dir = tmp_path / "oov"
    ctx = prepare_run("asr", ["model.vocabulary=你好大白请让我进入", "trainer.max_epochs=1"],
                      spec=str(tiny_run / "config.yaml"), run_dir=run_dir)
    stages = [s for s in pipeline_module("asr").build_stages(ctx.cfg) if s.name in ("prepare", "model")]
    with caplog.at_level("WARNING"):
        execute_stages(ctx, stages, echo=lambda s: None)
    report = read_json(run_dir / "model" / "vocabulary.json")
    train_texts = [json.loads(x)["text"] for x in (run_dir / "data" / "train_manifest.json").read_text(encoding="utf-8").splitlines()]
    expected = sum(1 for t in train_texts for ch in t if ch not in set("你好大白请让我进入"))
    assert report["oov"]["train"]["n_chars"] == expected > 0
    assert "小" in report["oov"]["train"]["characters"] and "小" in report["oov"]["test"]["characters"]
    assert "can never be predicted" in caplog.text


def test_pretrained_name_offline_fails_clearly(monkeypatch, tmp_path):
    """Tested up to the network call: the NGC URL is requested, the failure names the fix, no partial cache."""
    import urllib.error

    from hackathon.core.errors import HackathonError
    from tasks.asr import model as asr_model

    requested = []

    def offline(url, target):
        requested.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("NEMO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(asr_model, "fetch_url", offline)
    with pytest.raises(HackathonError) as err:
        asr_model.load_pretrained("stt_zh_citrinet_512")
    assert requested == [asr_model.PRETRAINED_CHAR_MODELS["stt_zh_citrinet_512"]]
    assert "network" in err.value.message and "model.init=/path/model.nemo" in err.value.fix
    assert not any(tmp_path.rglob("*.nemo"))
    with pytest.raises(HackathonError, match="not known"):
        asr_model.load_pretrained("no_such_model_xyz")
