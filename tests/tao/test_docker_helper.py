"""hackathon/core/docker.py: engine errors become the doctor's fixes; GPU requests; no engine needed."""

from __future__ import annotations

import pytest

from hackathon.core import docker as hd
from hackathon.core.errors import HackathonError


def test_daemon_down_gives_the_start_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(HackathonError) as exc:
        hd.client(timeout=5)
    assert exc.value.fix == hd.FIX_DAEMON and "no-docker.sock" in exc.value.message


@pytest.mark.parametrize("error,fix", [
    (PermissionError(13, "Permission denied"), hd.FIX_PERMISSION),
    (Exception("('Connection aborted.', PermissionError(13, 'Permission denied'))"), hd.FIX_PERMISSION),
    (Exception('could not select device driver "" with capabilities: [[gpu]]'), hd.FIX_NVIDIA),
    (Exception("Unknown runtime specified nvidia"), hd.FIX_NVIDIA),
    (Exception("error setting rlimits for ready process: error setting rlimit type 8: operation not permitted"), None),
])
def test_engine_errors_are_classified(error, fix):
    err = hd.classify_engine_error(error)
    if fix is not None:
        assert err.fix == fix
    else:
        assert "ulimit" in err.message and "tao.ulimits" in err.fix


@pytest.mark.parametrize("gpus,expected", [
    ("none", []), (None, []), ("all", [{"Count": -1, "DeviceIDs": []}]), ("0,2", [{"Count": 0, "DeviceIDs": ["0", "2"]}]),
    (1, [{"Count": 0, "DeviceIDs": ["1"]}]), ([0, 1], [{"Count": 0, "DeviceIDs": ["0", "1"]}]),
])
def test_gpu_device_requests(gpus, expected):
    got = [{"Count": r["Count"], "DeviceIDs": r["DeviceIDs"]} for r in hd.gpu_device_requests(gpus)]
    assert got == expected
    assert all(r["Capabilities"] == [["gpu"]] for r in hd.gpu_device_requests(gpus))


def test_bad_gpus_value_is_refused():
    with pytest.raises(HackathonError, match="gpus="):
        hd.gpu_device_requests("first")
