"""prepare-audio on a folder mixing good clips with every bad-input kind."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import soundfile as sf
from typer.testing import CliRunner

from data_tools.manifest import read_manifest
from data_tools.prepare_audio import prepare_audio
from hackathon.cli import app
from hackathon.core.errors import HackathonError

from .conftest import BAD_KINDS, GOOD_PHRASES


def _tree_digest(folder) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path).encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def prepared_asr(recordings, tmp_path_factory):
    before = _tree_digest(recordings)
    result = prepare_audio(recordings, tmp_path_factory.mktemp("prepared") / "asr", task="asr", workers=2)
    return result, before


def test_every_good_clip_is_in_the_manifest_at_16k_mono(prepared_asr):
    result, _ = prepared_asr
    entries = read_manifest(result.manifest_path)
    assert sorted(e.text for e in entries) == sorted(GOOD_PHRASES.values())
    for e in entries:
        info = sf.info(e.audio_filepath)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert e.duration == pytest.approx(info.frames / 16000, abs=1e-3)
    assert {e.speaker for e in entries if "good_wav" in e.audio_filepath} == {"spk_wav"}  # from the CSV


@pytest.mark.parametrize("name,kind", sorted(BAD_KINDS.items()))
def test_each_bad_input_is_reported_with_reason_and_fix(prepared_asr, recordings, name, kind):
    result, _ = prepared_asr
    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    rows = [r for r in report["rejected"] if r["path"] == str(recordings / name)]
    assert len(rows) == 1, f"{name} should be rejected once, report has {rows}"
    assert rows[0]["kind"] == kind
    assert name in rows[0]["reason"] and rows[0]["fix"]


def test_report_counts_and_src_untouched(prepared_asr, recordings):
    result, before = prepared_asr
    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    assert report["counts"]["accepted"] == len(GOOD_PHRASES)
    assert report["counts"]["rejected"] == len(BAD_KINDS) == len(result.rejected)
    assert not result.ok
    assert _tree_digest(recordings) == before, "prepare-audio must never modify SRC"


def test_cli_exits_nonzero_saying_some_inputs_rejected(recordings, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["data", "prepare-audio", str(recordings), "--task", "asr", "--out", str(out)])
    assert res.exit_code == 2
    assert "some inputs rejected" in res.output
    assert (out / "manifest.json").exists() and (out / "report.json").exists()


def test_tts_mode_cleans_and_flags_low_rate_sources(recordings, tmp_path):
    result = prepare_audio(recordings, tmp_path / "tts", task="tts", workers=2)
    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    assert result.sample_rate == 22050
    assert len(report["cleaned"]) == len(GOOD_PHRASES)
    # espeak leaves ~0.2 s of trailing silence: trimming must have removed some of it.
    assert all(c["trimmed_end_s"] > 0.05 for c in report["cleaned"])
    flagged = {f["path"].rsplit("/", 1)[-1]: f["flags"] for f in report["flagged"]}
    assert "16000 Hz" in flagged["good_m4a.m4a"][0] and "44100" in flagged["good_m4a.m4a"][0]
    assert any("44100" in n for n in report["notes"])  # dataset rate differs from the competition's
    entries = read_manifest(result.manifest_path)
    assert sf.info(entries[0].audio_filepath).samplerate == 22050


def test_tsv_transcripts_and_non_utf8_rows(tmp_path, recordings):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("good_wav.wav", "good_mp3.mp3", "good_ogg.ogg"):
        (src / name).write_bytes((recordings / name).read_bytes())
    (src / "texts.tsv").write_bytes("audio\ttext\tspeaker\ngood_wav.wav\t你好大白，请让我进入小区。\tA\n".encode()
                                    + "good_mp3\t我是这里的业主\tB\n".encode("gbk"))
    result = prepare_audio(src, tmp_path / "out", task="asr", workers=1)
    entries = read_manifest(result.manifest_path)
    assert [(e.text, e.speaker) for e in entries] == [("你好大白请让我进入小区", "A")]  # ASR drops punctuation
    kinds = {r["path"].rsplit("/", 1)[-1]: r["kind"] for r in result.rejected}
    assert kinds == {"good_mp3.mp3": "not_utf8", "good_ogg.ogg": "missing_transcript"}


def test_nemo_manifest_as_source(tmp_path, recordings):
    manifest = tmp_path / "in.json"
    rows = [{"audio_filepath": str(recordings / "good_flac_24bit.flac"), "duration": 0, "text": "我住在三号楼"},
            {"audio_filepath": "missing.wav", "duration": 1, "text": "你好"}]
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = prepare_audio(manifest, tmp_path / "out", task="asr", workers=1)
    assert [e.text for e in read_manifest(result.manifest_path)] == ["我住在三号楼"]
    assert [r["kind"] for r in result.rejected] == ["unreadable_path"]


def test_refuses_output_inside_src_or_a_foreign_folder(recordings, tmp_path):
    with pytest.raises(HackathonError, match="inside the source"):
        prepare_audio(recordings, recordings / "out", task="asr")
    (tmp_path / "theirs.txt").write_text("x")
    with pytest.raises(HackathonError, match="not made by prepare-audio"):
        prepare_audio(recordings, tmp_path, task="asr")


def test_prepare_audio_for_task_gives_split_manifests(recordings, tmp_path):
    from data_tools.prepare_audio import prepare_audio_for_task

    manifests = prepare_audio_for_task(recordings, tmp_path / "run_data", task="asr", sample_rate=16000,
                                       val=0.2, test=0.2, seed=0, workers=2)
    entries = {s: read_manifest(p) for s, p in manifests.items()}
    assert sum(len(v) for v in entries.values()) == len(GOOD_PHRASES)
    assert all(entries.values())
    again = prepare_audio_for_task(recordings, tmp_path / "run_data", task="asr", sample_rate=16000,
                                   val=0.2, test=0.2, seed=0, workers=2)  # a stage re-run reuses its folder
    assert {s: [e.text for e in read_manifest(p)] for s, p in again.items()} == \
        {s: [e.text for e in v] for s, v in entries.items()}


def test_file_name_that_is_not_utf8_is_reported(tmp_path, recordings):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.wav").write_bytes((recordings / "good_wav.wav").read_bytes())
    (src / "ok.txt").write_text("你好大白请让我进入小区", encoding="utf-8")
    bad_name = os.fsencode(str(src)) + b"/" + "录音".encode("gbk") + b".wav"
    with open(bad_name, "wb") as fh:
        fh.write((recordings / "good_mp3.mp3").read_bytes())
    result = prepare_audio(src, tmp_path / "out", task="asr", workers=1)
    assert result.accepted == 1
    assert [r["kind"] for r in result.rejected] == ["unreadable_path"]
    assert "not valid UTF-8" in result.rejected[0]["reason"]
    json.loads(result.report_path.read_text(encoding="utf-8"))  # the report itself stays valid UTF-8 JSON
