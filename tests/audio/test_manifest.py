"""data_tools.manifest: NeMo JSONL round trip, relative paths, errors that name the line."""

from __future__ import annotations

import json

import pytest

from data_tools.manifest import ManifestEntry, read_manifest, total_hours, write_manifest
from hackathon.core.errors import HackathonError


def test_round_trip_keeps_speaker_and_extra_keys(tmp_path):
    entries = [ManifestEntry("/a/1.wav", 1.23456, "你好", "f1"),
               ManifestEntry("/a/2.wav", 2.0, "大白", None, {"phrase_index": 0})]
    path = write_manifest(tmp_path / "m.json", entries)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {"audio_filepath": "/a/1.wav", "duration": 1.2346, "text": "你好", "speaker": "f1"}
    assert "speaker" not in rows[1] and rows[1]["phrase_index"] == 0
    back = read_manifest(path)
    assert back[1].extra == {"phrase_index": 0} and back[0].speaker == "f1"
    assert total_hours(back) == pytest.approx(3.2346 / 3600)


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    (tmp_path / "m.json").write_text('{"audio_filepath": "wavs/x.wav", "duration": 1, "text": "好"}\n')
    assert read_manifest(tmp_path / "m.json")[0].audio_filepath == str(tmp_path / "wavs" / "x.wav")


@pytest.mark.parametrize("bad_line,expected", [
    ('{"audio_filepath": "x.wav", "duration": 1, "text": "a"', "broken JSON"),
    ('{"audio_filepath": "x.wav", "text": "a"}', "lacks duration"),
    ('{"audio_filepath": "x.wav", "duration": "long", "text": "a"}', "not a number"),
    ('["x.wav", 1, "a"]', "not a JSON object"),
])
def test_broken_lines_are_reported_with_their_line_number(tmp_path, bad_line, expected):
    path = tmp_path / "m.json"
    path.write_text('{"audio_filepath": "ok.wav", "duration": 1, "text": "a"}\n\n' + bad_line + "\n")
    with pytest.raises(HackathonError) as info:
        read_manifest(path)
    assert f"{path}:3" in info.value.message and expected in info.value.message


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(HackathonError, match="manifest not found"):
        read_manifest(tmp_path / "nope.json")
