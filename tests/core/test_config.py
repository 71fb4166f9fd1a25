"""Specs: overrides merge, unknown keys are refused with a suggestion, `base:` chains merge (cycles refused),
--print-config names where each value came from, renamed keys are refused with the new name, every spec field
is commented and a `base:` spec holds only its differences."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hackathon.core import config as config_mod
from hackathon.core.config import describe_config, load_config, renamed_keys, spec_chain
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


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chain_merges_and_cycle_is_refused(tmp_path):
    write(tmp_path / "default.yaml", "seed: 1\nlist: [1, 2, 3]\ntrainer:\n  lr: 0.5\n  batch_size: 4\n"
          "model:\n  overrides:\n    small: 1\n    dims: {a: 1}\n")
    write(tmp_path / "t" / "demo.yaml", "base: ../default.yaml\nseed: 2\ntrainer:\n  batch_size: 8\n"
          "  steps: ${trainer.batch_size}\n")
    ws = write(tmp_path / "t" / "ws.yaml", "base: demo\nlist: [9]\ntrainer:\n  batch_size: 32\n"
          "model:\n  overrides:\n    _replace_: true\n    dims: {b: 2}\n")
    cfg = load_config("asr", str(ws))
    assert "base" not in cfg
    assert (cfg.seed, list(cfg.list), cfg.trainer.lr, cfg.trainer.batch_size, cfg.trainer.steps) == (2, [9], 0.5, 32, 32)
    assert OmegaConf.to_container(cfg.model.overrides) == {"dims": {"b": 2}}  # replaced, not merged
    assert OmegaConf.to_container(load_config("asr", str(tmp_path / "t" / "demo.yaml")).model.overrides) == {
        "small": 1, "dims": {"a": 1}}
    assert [p.name for p, _ in spec_chain(ws)] == ["default.yaml", "demo.yaml", "ws.yaml"]
    write(tmp_path / "default.yaml", "base: t/ws.yaml\nseed: 1\n")
    with pytest.raises(HackathonError, match="cycle") as err:
        load_config("asr", str(ws))
    assert all(name in err.value.message for name in ("ws.yaml", "demo.yaml", "default.yaml"))
    write(tmp_path / "t" / "bad.yaml", "base: nope\nseed: 1\n")
    with pytest.raises(HackathonError, match="nope"):
        load_config("asr", str(tmp_path / "t" / "bad.yaml"))


def test_print_config_names_the_source_of_every_value(tmp_path):
    base = write(tmp_path / "demo.yaml", "seed: 1\ndata:\n  rate: 16000\n  workers: 4\n"
                 "model:\n  rate: ${data.rate}\n  blocks:\n    - {filters: 8}\n")
    ws = write(tmp_path / "ws.yaml", "base: demo\ndata:\n  workers: 32\n")
    text = describe_config("asr", str(ws), ["data.rate=8000", "+extra.flag=true"])
    lines = dict(line.strip().split(": ", 1) for line in text.splitlines() if ": " in line)
    assert lines["seed"] == f"1  # {base}"
    assert lines["workers"] == f"32  # {ws}"
    assert lines["flag"] == "true  # override"
    data, model = text.split("model:")
    assert "  rate: 8000  # override" in data and f"  rate: 8000  # {base}" in model  # where ${data.rate} is written
    assert f"blocks:  # {base}" in text and "base" not in lines
    shipped = describe_config("asr", None, [])
    assert "seed: 0  # specs/" in shipped and "${" not in shipped
    assert all(line.endswith(":") or "  # " in line or line.lstrip().startswith("-") or line.startswith("   ")
               for line in shipped.splitlines())


def test_renamed_key_refused_as_override_and_in_a_spec(tmp_path, monkeypatch):
    monkeypatch.setattr(config_mod, "renamed_keys", lambda task: {"data.batch_size": "trainer.batch_size",
                                                                  "torch": "trainer"})
    spec = write(tmp_path / "s.yaml", SPEC)
    for item in ("data.batch_size=16", "+data.batch_size=16"):
        with pytest.raises(HackathonError) as err:
            load_config("asr", str(spec), [item])
        assert "data.batch_size was renamed" in err.value.message and "override" in err.value.message
        assert "write trainer.batch_size=16" in err.value.message
    with pytest.raises(HackathonError, match="torch.epochs was renamed.*write trainer.epochs=3"):
        load_config("asr", str(spec), ["+torch.epochs=3"])
    user = write(tmp_path / "mine.yaml", "base: s\ndata:\n  batch_size: 8\n")
    with pytest.raises(HackathonError) as err:
        load_config("asr", str(user))
    assert "data.batch_size" in err.value.message and str(user) in err.value.message
    assert "trainer.batch_size" in err.value.message


def test_every_renamed_key_given_the_old_way_names_the_new_key(tmp_path):
    import yaml

    table = yaml.safe_load((SPECS_DIR / "renamed.yaml").read_text())
    assert set(table) >= {"asr", "tts", "detect"}
    for task in table:
        demo = SPECS_DIR / task / "demo.yaml"
        load_config(task)  # the shipped demo spec uses no old key
        for old, new in renamed_keys(task).items():
            assert old != new, (task, old)
            with pytest.raises(HackathonError) as err:
                load_config(task, None, [f"{old}=1"])
            assert old in err.value.message and f"{new}=1" in err.value.message
            nested = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(old.split(".")[:-1]))
            user = write(tmp_path / task / "user.yaml",
                         f"base: {demo}\n{nested}{'  ' * old.count('.')}{old.split('.')[-1]}: 1\n")
            with pytest.raises(HackathonError) as err:
                load_config(task, str(user))
            assert old in err.value.message and "user.yaml" in err.value.message and new in err.value.message


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


def test_base_specs_hold_only_their_differences():
    """A spec with `base:` (a workstation spec, demo44k) writes only the fields whose value differs from its
    base's; a `_replace_` section replaces its base's section, so its fields all count."""
    import copy

    from omegaconf import OmegaConf

    from hackathon.core.config import REPLACE, _leaves, merge_specs

    based = [p for p in sorted(SPECS_DIR.rglob("*.yaml")) if re.search(r"^base:", p.read_text(), re.MULTILINE)]
    assert {"asr/workstation.yaml", "tts/workstation.yaml", "tts/demo44k.yaml"} <= {
        str(p.relative_to(SPECS_DIR)) for p in based}
    same = []
    for path in based:
        chain = spec_chain(path)
        below, own = merge_specs([part for _, part in chain[:-1]]), copy.deepcopy(chain[-1][1])
        replaced = [k for k in _all_paths(own) if OmegaConf.select(own, k, default=None) is not None
                and OmegaConf.is_dict(OmegaConf.select(own, k)) and REPLACE in OmegaConf.select(own, k)]
        for key in _leaves(own):
            if any(key == r or key.startswith(r + ".") for r in replaced):
                continue
            if OmegaConf.select(below, key, default="<absent>") == OmegaConf.select(own, key):
                same.append(f"{path.relative_to(SPECS_DIR)}: {key}")
    assert not same, "fields equal to the base spec's (drop them):\n" + "\n".join(same)


def _all_paths(cfg, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    out = []
    for k in cfg.keys():
        out.append(f"{prefix}{k}")
        if isinstance(cfg._get_node(k), DictConfig):
            out.extend(_all_paths(cfg[k], f"{prefix}{k}."))
    return out


def test_every_task_has_demo_and_workstation_spec():
    for task in ("asr", "tts", "detect"):
        assert (SPECS_DIR / task / "demo.yaml").exists(), task
        assert (SPECS_DIR / task / "workstation.yaml").exists(), task
