"""GPU locks: exclusive, queued first-come first-served, released by kill -9; which GPUs a config uses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hackathon.core import gpus
from hackathon.core.run_context import Stage
from hackathon.core.errors import HackathonError

REPO = Path(__file__).resolve().parents[2]

# A process that takes a lock through the same API a run uses, says so, then holds it until killed.
HOLDER = """
import sys, time
from hackathon.core import gpus
with gpus.hold(sys.argv[1].split(","), run_dir=sys.argv[2], echo=lambda s: print(s, flush=True)):
    print("HOLDING", flush=True)
    time.sleep(float(sys.argv[3]))
print("RELEASED", time.time(), flush=True)
"""


def start_holder(env, keys="gpu0", run_dir="/runs/asr/first", seconds=60.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, keys, run_dir, str(seconds)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "HOLDING"
    return proc


def wait_until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_busy_lock_names_holder_and_kill9_releases_it(team_env):
    holder = start_holder(team_env)
    try:
        with pytest.raises(HackathonError) as err:
            gpus.acquire("gpu0", wait=False)
        assert f"pid {holder.pid}" in err.value.message and "/runs/asr/first" in err.value.message
        assert "since" in err.value.message and err.value.fix
        status = gpus.lock_status("gpu0")
        assert status["held"] and status["holder"]["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # No cleanup ran in the killed process: the kernel dropped its flock.
    lock = gpus.acquire("gpu0", run_dir="/runs/asr/second", wait=False)
    try:
        assert gpus.lock_status("gpu0")["holder"]["run_dir"] == "/runs/asr/second"
    finally:
        lock.release()
    assert gpus.lock_status("gpu0") == {"key": "gpu0", "held": False, "holder": None, "waiting": 0}


def test_waiters_are_served_first_come_first_served(team_env, tmp_path):
    holder = start_holder(team_env, seconds=60)
    waiters = []
    try:
        for name in ("first", "second", "third"):
            waiters.append(subprocess.Popen([sys.executable, "-c", HOLDER, "gpu0", f"/runs/{name}", "0.3"],
                                            env=team_env, cwd=REPO, stdout=subprocess.PIPE, text=True))
            # each waiter is queued before the next one starts
            wait_until(lambda n=len(waiters): gpus.lock_status("gpu0")["waiting"] == n, what=f"{name} queued")
        first_line = waiters[0].stdout.readline()
        assert first_line.startswith("waiting for GPU gpu0: held by") and f"pid {holder.pid}" in first_line
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    released = []
    for w in waiters:
        out, _ = w.communicate(timeout=30)
        assert w.returncode == 0, out
        released.append(float(out.split("RELEASED")[1]))
    assert released == sorted(released)


def test_hold_takes_every_gpu_of_a_multi_gpu_run(team_env):
    with gpus.hold(["gpu1", "gpu0"], run_dir="/runs/ddp"):
        for key in ("gpu0", "gpu1"):
            with pytest.raises(HackathonError, match=f"GPU {key} is busy"):
                gpus.acquire(key, wait=False)
    assert not gpus.lock_status("gpu0")["held"] and not gpus.lock_status("gpu1")["held"]


def test_waiting_gives_up_after_timeout_and_leaves_the_queue(team_env):
    holder = start_holder(team_env)
    try:
        with pytest.raises(HackathonError, match="Gave up waiting"):
            gpus.acquire("gpu0", wait=True, timeout=0.6, echo=lambda s: None)
        assert gpus.lock_status("gpu0")["waiting"] == 0
    finally:
        holder.kill()
        holder.wait()


def test_lock_files_are_group_writable(team_env):
    gpus.acquire("gpu7", wait=False).release()
    base = Path(team_env["HACKATHON_LOCK_DIR"])
    assert base.stat().st_mode & 0o2070 == 0o2070
    assert (base / "gpu7.lock").stat().st_mode & 0o060 == 0o060


def test_gpus_command_shows_holder(team_env, hackathon_bin):
    holder = start_holder(team_env, keys="gpu0", run_dir="/runs/asr/shown")
    try:
        out = subprocess.run([hackathon_bin, "gpus", "--json"], env=team_env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        rows = {r["key"]: r for r in json.loads(out.stdout)}
        assert rows["gpu0"]["held"] and rows["gpu0"]["holder"]["run_dir"] == "/runs/asr/shown"
        table = subprocess.run([hackathon_bin, "gpus"], env={**team_env, "COLUMNS": "200"}, capture_output=True,
                               text=True, timeout=60)
        assert "/runs/asr/shown" in table.stdout and str(holder.pid) in table.stdout
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ which GPUs a run uses

def _fit(trainer="trainer"):
    return [Stage("prepare", lambda ctx: None, "data"), Stage("fit", lambda ctx: None, "train", trainer=trainer)]


def _tao():
    return [Stage("tao_train", lambda ctx: None, "train", devices="gpus")]


def test_cpu_runs_take_no_lock(team_env):
    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 2}})
    assert gpus.lock_keys_for(cfg, _fit()) == []
    assert gpus.lock_keys_for(OmegaConf.create({"gpus": "none"}), _tao()) == []


def test_lock_key_stand_ins_from_env_or_spec(team_env, monkeypatch):
    cfg = OmegaConf.create({"trainer": {"accelerator": "cpu"}, "lock_keys": ["gpu0", "gpu1"]})
    assert gpus.lock_keys_for(cfg, _fit()) == ["gpu0", "gpu1"]
    monkeypatch.setenv("HACKATHON_LOCK_KEYS", "gpu3")
    assert gpus.lock_keys_for(cfg, _fit()) == ["gpu3"]


@pytest.mark.parametrize("accelerator, devices, expected", [
    ("gpu", 1, [0]), ("gpu", 2, [0, 1]), ("auto", -1, [0, 1, 2, 3]), ("cuda", "auto", [0, 1, 2, 3]),
    ("gpu", [1, 3], [1, 3]), ("gpu", "0,2", [0, 2]), ("gpu", "2", [0, 1]), ("cpu", 4, []), ("gpu", 0, []),
])
def test_select_gpus_follows_lightning_devices(accelerator, devices, expected):
    assert gpus.select_gpus(accelerator, devices, [0, 1, 2, 3]) == expected


def test_cuda_visible_devices_maps_to_physical_gpus(monkeypatch):
    smi = ("0, GPU-aaa, NVIDIA A100, 1200, 81920, 3\n1, GPU-bbb, NVIDIA A100, [N/A], 81920, 0\n"
           "2, GPU-ccc, NVIDIA A100, 5, 81920, 0\n")
    table = gpus.parse_nvidia_smi(smi)
    assert table[0]["memory_used_mib"] == 1200 and table[1]["memory_used_mib"] is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-bbb")
    visible = gpus.visible_gpu_indices(table)
    assert visible == [2, 1]
    # trainer.devices=1 under CUDA_VISIBLE_DEVICES=2,... is physical GPU 2: that is the lock taken
    assert gpus.select_gpus("gpu", 1, visible) == [2]


def test_gpu_config_on_machine_without_gpus_takes_no_lock(team_env, monkeypatch):
    monkeypatch.setattr(gpus, "query_gpus", lambda: [])
    assert gpus.lock_keys_for(OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}}), _fit()) == []
    monkeypatch.setattr(gpus, "query_gpus", lambda: gpus.parse_nvidia_smi("0, GPU-a, X, 0, 100, 0\n1, GPU-b, X, 0, 100, 0"))
    assert gpus.lock_keys_for(OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 2}}), _fit()) == ["gpu0", "gpu1"]
    assert gpus.lock_keys_for(OmegaConf.create({"gpus": 1}), _tao()) == ["gpu1"]  # docker's GPU indexes
    # a section no train stage declares takes nothing, whatever it is called
    assert gpus.lock_keys_for(OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 2}}), _tao()) == []


def test_ddp_child_processes_do_not_lock(team_env, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not gpus.is_lock_owner_process()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert gpus.is_lock_owner_process()


def _two_gpus(monkeypatch):
    monkeypatch.setattr(gpus, "query_gpus",
                        lambda: gpus.parse_nvidia_smi("0, GPU-a, X, 0, 100, 0\n1, GPU-b, X, 0, 100, 0"))


def test_every_declared_trainer_section_counts_tts_style(team_env, monkeypatch):
    _two_gpus(monkeypatch)
    cfg = OmegaConf.create({"fastpitch": {"trainer": {"devices": 1}},
                            "hifigan": {"enabled": False, "trainer": {"devices": 2, "accelerator": "gpu"}}})
    assert gpus.lock_keys_for(cfg, _fit("fastpitch.trainer") + _fit("hifigan.trainer")) == ["gpu0", "gpu1"]
    assert gpus.lock_keys_for(cfg, _fit("fastpitch.trainer")) == ["gpu0"]


def test_tao_names_its_gpus(team_env, monkeypatch):
    _two_gpus(monkeypatch)
    def keys(gpus_value):
        return gpus.lock_keys_for(OmegaConf.create({"gpus": gpus_value}), _tao())

    assert keys("all") == ["gpu0", "gpu1"]
    assert keys("1") == ["gpu1"]  # docker --gpus device=1
    assert keys(0) == ["gpu0"]
    assert keys("none") == []


FAKE_NVIDIA_SMI = """#!/bin/sh
# stands in for nvidia-smi on this CPU machine: two GPUs, the query `hackathon gpus` makes
case "$*" in
  *--query-gpu=index,uuid,name,memory.used,memory.total,utilization.gpu*--format=csv,noheader,nounits*)
    echo "0, GPU-11111111, NVIDIA RTX A6000, 10240, 49140, 87"
    echo "1, GPU-22222222, NVIDIA RTX A6000, 3, 49140, 0" ;;
  *) echo "unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


def test_gpus_command_reads_nvidia_smi(team_env, tmp_path, hackathon_bin):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    env = {**team_env, "PATH": f"{bin_dir}:{team_env['PATH']}"}
    holder = start_holder(env, keys="gpu1", run_dir="/runs/tts/big")
    try:
        out = subprocess.run([hackathon_bin, "gpus", "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        rows = {r["key"]: r for r in json.loads(out.stdout)}
        assert set(rows) == {"gpu0", "gpu1"}
        assert rows["gpu0"]["memory_used_mib"] == 10240 and not rows["gpu0"]["held"]
        assert rows["gpu1"]["held"] and rows["gpu1"]["holder"]["run_dir"] == "/runs/tts/big"
        assert rows["gpu1"]["name"] == "NVIDIA RTX A6000"
    finally:
        holder.kill()
        holder.wait()
