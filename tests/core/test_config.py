"""Specs: overrides merge, unknown keys are refused with a suggestion, every spec field is commented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hackathon.core.config import load_config
from hackathon.core.errors import HackathonError
from hackathon.core.paths import SPECS_DIR

SPEC = """\
# a tiny spec
trainer:
  max_epochs: 3  # epochs
  lr: 0.1  # learning rate
data:
  source: null  # demo data
"""


def test_override_merges_and_unknown_key_refused(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    cfg = load_config("asr", str(spec), ["trainer.max_epochs=7", "+extra.flag=true"])
    assert cfg.trainer.max_epochs == 7 and cfg.extra.flag is True and cfg.trainer.lr == 0.1
    with pytest.raises(HackathonError) as err:
        load_config("asr", str(spec), ["trainer.max_epoch=7"])
    assert "trainer.max_epochs" in err.value.fix
    with pytest.raises(HackathonError, match="not key=value"):
        load_config("asr", str(spec), ["trainer.max_epochs"])


def test_missing_spec_names_choices():
    with pytest.raises(HackathonError, match="not found"):
        load_config("asr", "no-such-spec")


KEY_LINE = re.compile(r"^\s*(- )?[A-Za-z_][\w.\-]*\s*:")


def uncommented_fields(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    missing = []
    for i, line in enumerate(lines):
        if not KEY_LINE.match(line) or line.lstrip().startswith("#"):
            continue
        above = lines[i - 1].strip() if i else ""
        if "#" not in line and not above.startswith("#"):
            missing.append(f"{path.relative_to(SPECS_DIR)}:{i + 1}: {line.strip()}")
    return missing


def test_every_spec_field_is_commented():
    specs = sorted(SPECS_DIR.rglob("*.yaml"))
    assert specs, "no specs found"
    missing = [m for p in specs for m in uncommented_fields(p)]
    assert not missing, "fields without a comment:\n" + "\n".join(missing[:50])


def test_every_task_has_demo_and_workstation_spec():
    for task in ("asr", "tts", "detect"):
        assert (SPECS_DIR / task / "demo.yaml").exists(), task
        assert (SPECS_DIR / task / "workstation.yaml").exists(), task
