"""Mounts file, host<->container translation and the pre-flight that runs before any container."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hackathon.core.errors import HackathonError
from tasks.detect import tao_spec
from tasks.detect.tao_mounts import (INPUT, OUTPUT, RESULTS, Mount, MountPlan, PathCheck, forbidden_reason,
                                     invoking_user, plan_for_run, preflight, read_mounts_file, spec_checks,
                                     write_mounts_file)


def _plan(tmp_path: Path, **kw) -> MountPlan:
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "run" / "inner").mkdir(exist_ok=True)
    return MountPlan([Mount(tmp_path / "run", "/workspace/run"), Mount(tmp_path / "data", "/workspace/data", True),
                      Mount(tmp_path / "run" / "inner", "/deep")], user=invoking_user(), **kw)


def test_translation_uses_the_most_specific_mount(tmp_path):
    plan = _plan(tmp_path)
    assert plan.to_container(tmp_path / "run" / "a" / "b.txt") == "/workspace/run/a/b.txt"
    assert plan.to_container(tmp_path / "run" / "inner" / "x") == "/deep/x"
    assert plan.to_container(tmp_path / "elsewhere") is None
    assert plan.to_host("/workspace/data/k/l") == tmp_path / "data" / "k" / "l"
    assert plan.to_host("/workspace/runx") is None  # a prefix of the name is not a parent
    assert plan.volumes()[str(tmp_path / "data")] == {"bind": "/workspace/data", "mode": "ro"}


def test_mounts_file_round_trip_in_tao_format(tmp_path):
    plan = _plan(tmp_path, envs={"A": "1"}, shm_size="8G", ulimits={"memlock": -1})
    write_mounts_file(plan, tmp_path / "mounts.json")
    data = json.loads((tmp_path / "mounts.json").read_text())
    assert data["Mounts"][0] == {"source": str(tmp_path / "run"), "destination": "/workspace/run"}
    assert data["Envs"] == [{"variable": "A", "value": "1"}]
    assert data["DockerOptions"] == {"user": invoking_user(), "shm_size": "8G", "ulimits": {"memlock": -1}}
    again = read_mounts_file(tmp_path / "mounts.json")
    assert again.mounts == plan.mounts and again.envs == plan.envs and again.user == plan.user


def test_users_mounts_file_is_read_and_the_run_dir_added(tmp_path):
    user_file = tmp_path / "tao_mounts.json"
    (tmp_path / "exp").mkdir()
    user_file.write_text(json.dumps({"Mounts": [{"source": str(tmp_path / "exp"), "destination": "/workspace/tao-experiments/x"}],
                                     "DockerOptions": {"shm_size": "32G"}}))
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    plan = plan_for_run(run, user_file=user_file)
    assert plan.to_container(tmp_path / "exp" / "f") == "/workspace/tao-experiments/x/f"
    assert plan.to_container(run / "tao") is not None
    assert plan.shm_size == "32G" and plan.user == f"{os.getuid()}:{os.getgid()}"


@pytest.mark.parametrize("content,needle", [
    ("{not json", "not valid JSON"),
    (json.dumps({"Mounts": [{"source": "/x"}]}), "Mounts[0]"),
    (json.dumps({"Mounts": [{"source": "/x", "destination": "rel/path"}]}), "absolute"),
])
def test_malformed_mounts_file_names_the_problem(tmp_path, content, needle):
    f = tmp_path / "m.json"
    f.write_text(content)
    with pytest.raises(HackathonError) as exc:
        read_mounts_file(f)
    assert needle in exc.value.message and str(f) in exc.value.message and exc.value.fix


@pytest.mark.parametrize("source", ["/", "/etc", "/etc/ssl", "/root", "~/.ssh", "~", "/var/run/docker.sock", "/var/run", "/run"])
def test_forbidden_mounts(source):
    assert forbidden_reason(Path(os.path.expanduser(source))) is not None


def test_ordinary_folders_may_be_mounted(tmp_path):
    assert forbidden_reason(tmp_path) is None
    assert forbidden_reason(Path("/work/data")) is None


def test_forbidden_mount_is_refused_by_preflight(tmp_path):
    plan = MountPlan([Mount(Path("/etc"), "/workspace/etc")], user=invoking_user(), origin="my.json")
    with pytest.raises(HackathonError) as exc:
        preflight(plan, [])
    assert "/etc" in exc.value.message and "refused" in exc.value.message and exc.value.fix


def test_missing_host_dir_is_refused(tmp_path):
    plan = MountPlan([Mount(tmp_path / "nope", "/workspace/nope")], user=invoking_user(), origin="my.json")
    with pytest.raises(HackathonError) as exc:
        preflight(plan, [])
    assert str(tmp_path / "nope") in exc.value.message and "mkdir -p" in exc.value.fix


def test_spec_path_outside_mounts_names_the_spec_line(tmp_path):
    plan = _plan(tmp_path)
    spec = {"training_config": {"num_epochs": 1, "pretrain_model_path": "/home/me/resnet18.hdf5"}}
    spec_file = tmp_path / "run" / "spec.txt"
    fields = tao_spec.write_spec(spec, spec_file, "ssd")
    with pytest.raises(HackathonError) as exc:
        preflight(plan, spec_checks(spec_file, fields))
    msg = exc.value.message
    assert f"{spec_file} line 3" in msg and "training_config.pretrain_model_path" in msg
    assert "/home/me/resnet18.hdf5" in msg and "not inside any mount" in msg
    assert "add a mount" in exc.value.fix


def test_inputs_must_exist_and_globs_must_match(tmp_path):
    plan = _plan(tmp_path)
    (tmp_path / "run" / "tf").mkdir()
    with pytest.raises(HackathonError, match="does not exist"):
        preflight(plan, [PathCheck("argument -m", "/workspace/run/missing.hdf5", INPUT)])
    with pytest.raises(HackathonError, match="matches no file"):
        preflight(plan, [PathCheck("spec", "/workspace/run/tf/train*", INPUT)])
    (tmp_path / "run" / "tf" / "train-0").write_text("x")
    preflight(plan, [PathCheck("spec", "/workspace/run/tf/train*", INPUT)])


def test_outputs_need_a_writable_non_readonly_place(tmp_path):
    plan = _plan(tmp_path)
    preflight(plan, [PathCheck("argument -r", "/workspace/run/new/results", RESULTS),
                     PathCheck("argument -o", "/workspace/run/new/x.onnx", OUTPUT)])
    with pytest.raises(HackathonError, match="read-only"):
        preflight(plan, [PathCheck("argument -r", "/workspace/data/results", RESULTS)])
    locked = tmp_path / "run" / "locked"
    locked.mkdir()
    os.chown(locked, 54321, 54321) if os.getuid() == 0 else None
    locked.chmod(0o755)
    plan.user = "12345:12345"  # the container user is not the owner
    with pytest.raises(HackathonError) as exc:
        preflight(plan, [PathCheck("argument -r", "/workspace/run/locked/results", RESULTS)])
    assert "not writable by the container user 12345:12345" in exc.value.message and "chown" in exc.value.fix


def test_all_problems_are_reported_together(tmp_path):
    plan = _plan(tmp_path)
    with pytest.raises(HackathonError) as exc:
        preflight(plan, [PathCheck("a", "/nowhere/x", INPUT), PathCheck("b", "/workspace/run/none", INPUT),
                         PathCheck("c", "relative/y", INPUT)])
    assert "3 path problems" in exc.value.message
