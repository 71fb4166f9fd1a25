"""split (speaker-disjoint, seeded, phrase groups kept together) and the HTML dataset report."""

from __future__ import annotations

import re

import pytest

from data_tools.audio_report import mel_filterbank, write_audio_report
from data_tools.audio_split import split_manifest
from data_tools.manifest import ManifestEntry, read_manifest, write_manifest
from hackathon.core.errors import HackathonError


def _entries(n_speakers=6, per_speaker=10):
    return [ManifestEntry(f"/d/{s}_{i}.wav", 1.0 + i, "你好", f"spk{s}") for s in range(n_speakers)
            for i in range(per_speaker)]


def test_split_by_speaker_is_disjoint_and_seeded(tmp_path):
    manifest = write_manifest(tmp_path / "all.json", _entries())
    result = split_manifest(manifest, tmp_path / "a", seed=7)
    assert result.grouped_by == "speaker"
    speakers = {s: {e.speaker for e in read_manifest(p)} for s, p in result.manifests.items()}
    assert all(speakers.values())
    assert not (speakers["train"] & speakers["test"]) and not (speakers["train"] & speakers["val"])
    assert sum(result.counts.values()) == 60
    again = split_manifest(manifest, tmp_path / "b", seed=7)
    assert [read_manifest(p) for p in again.manifests.values()] == [read_manifest(p) for p in result.manifests.values()]


def test_phrase_pieces_stay_with_their_sentence(tmp_path):
    rows = []
    for i in range(20):
        whole = f"/d/{i}.wav"
        rows.append(ManifestEntry(whole, 4.0, "您好，张伟", None, {"phrase_index": -1}))
        rows += [ManifestEntry(f"/d/{i}_p{j}.wav", 1.0, "x", None, {"phrase_index": j, "whole": whole}) for j in range(2)]
    result = split_manifest(write_manifest(tmp_path / "m.json", rows), tmp_path / "o", seed=0)
    assert result.grouped_by == "clip"
    for split, path in result.manifests.items():
        entries = read_manifest(path)
        wholes = {e.audio_filepath for e in entries if e.extra["phrase_index"] == -1}
        assert {e.extra["whole"] for e in entries if e.extra["phrase_index"] >= 0} == wholes


def test_split_refuses_to_overwrite_without_force(tmp_path):
    manifest = write_manifest(tmp_path / "all.json", _entries())
    split_manifest(manifest)
    with pytest.raises(HackathonError, match="already exist"):
        split_manifest(manifest)
    split_manifest(manifest, overwrite=True)


def test_mel_filterbank_shape_and_coverage():
    fb = mel_filterbank(16000, n_fft=512, n_mels=40)
    assert fb.shape == (40, 257)
    assert (fb.max(axis=1) > 0.5).all()  # every filter has a peak: no empty mel bins


def test_report_html_is_self_contained(recordings, tmp_path):
    from data_tools.prepare_audio import prepare_audio

    result = prepare_audio(recordings, tmp_path / "prep", task="asr", workers=2)
    html_path = write_audio_report(result.manifest_path, samples=3)
    page = html_path.read_text(encoding="utf-8")
    assert page.count("<audio controls src='data:audio/wav;base64,") == 3
    assert len(re.findall(r"data:image/png;base64,", page)) == 4  # histogram + 3 clip figures
    assert "Rejected inputs (14)" in page and "zero_byte" in page
    assert "你" in page and "hours" in page
    assert not re.search(r"src=['\"](?!data:)", page), "everything must be embedded"
