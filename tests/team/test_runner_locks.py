"""The runner holds the GPU lock around a run's stages: two runs on one GPU id started together run one
after the other; kill -9 of the first lets the second go on. Real runner, real processes; the lock key
"gpu0" stands in for a GPU id on this CPU machine (HACKATHON_LOCK_KEYS)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from hackathon.core.atomic import read_json
from hackathon.core.registry import list_runs
from tests.team.tiny_pipeline import write_tiny_spec

REPO = Path(__file__).resolve().parents[2]


def start_run(env, task: str, spec: Path, run_dir: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.team.tiny_pipeline", task, str(spec), str(run_dir), *flags],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def train_interval(run_dir: Path) -> tuple[float, float]:
    marks = dict(line.split() for line in (run_dir / "train_marks.txt").read_text().splitlines())
    return float(marks["start"]), float(marks["end"])


def wait_for_status(run_dir: Path, status: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = read_json(run_dir / "meta.json", default=None) if (run_dir / "meta.json").exists() else None
        if meta and meta.get("status") == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{run_dir} never reached status {status!r}")


def test_two_runs_on_one_gpu_run_one_after_the_other(team_env, tmp_path):
    env = {**team_env, "HACKATHON_LOCK_KEYS": "gpu0"}
    spec = write_tiny_spec(tmp_path / "spec.yaml", {"cer": 0.5}, seconds=3)  # > start-up skew on a busy box
    a, b = tmp_path / "runs" / "asr" / "a", tmp_path / "runs" / "asr" / "b"
    procs = [start_run(env, "asr", spec, a), start_run(env, "asr", spec, b)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (s1, e1), (s2, e2) = sorted([train_interval(a), train_interval(b)])
    assert e1 <= s2, "the two trainings overlapped on one GPU"
    waited = [o for o in outs if "waiting for GPU gpu0: held by" in o]
    assert len(waited) == 1, outs
    for d in (a, b):
        meta = json.loads((d / "meta.json").read_text())
        assert meta["status"] == "done" and meta["gpu_locks"] == ["gpu0"]
        assert (d / "report.html").exists()


def test_kill9_of_the_first_run_lets_the_queued_one_run(team_env, tmp_path):
    env = {**team_env, "HACKATHON_LOCK_KEYS": "gpu0"}
    first, second = tmp_path / "runs" / "asr" / "first", tmp_path / "runs" / "asr" / "second"
    slow = start_run(env, "asr", write_tiny_spec(tmp_path / "slow.yaml", {"cer": 0.4}, seconds=120), first)
    wait_for_status(first, "running")
    queued = start_run(env, "asr", write_tiny_spec(tmp_path / "fast.yaml", {"cer": 0.3}, seconds=0.1), second)
    try:
        wait_for_status(second, "queued")
        line = ""
        while "waiting for GPU" not in line:
            line = queued.stdout.readline()
            assert line, "the second run ended without queueing"
        assert f"pid {slow.pid}" in line and str(first) in line and "since" in line
        time.sleep(1.0)
        assert queued.poll() is None and not (second / "train_marks.txt").exists()
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    out = queued.communicate(timeout=60)[0]
    assert queued.returncode == 0, out
    assert json.loads((second / "metrics.json").read_text()) == {"cer": 0.3}
    rows = {Path(r["run_dir"]).name: r for r in list_runs()}
    assert rows["second"]["status"] == "done" and rows["second"]["metrics"] == {"cer": 0.3}
    assert rows["first"]["status"] == "running"  # killed -9: nothing could record its end


def test_no_wait_fails_fast_naming_the_holder(team_env, tmp_path):
    env = {**team_env, "HACKATHON_LOCK_KEYS": "gpu0"}
    spec = write_tiny_spec(tmp_path / "spec.yaml", {"cer": 0.2}, seconds=60)
    holder_dir = tmp_path / "runs" / "asr" / "holder"
    holder = start_run(env, "asr", spec, holder_dir)
    try:
        wait_for_status(holder_dir, "running")
        t0 = time.monotonic()
        refused = start_run(env, "asr", write_tiny_spec(tmp_path / "other.yaml", {"cer": 0.1}), tmp_path / "r2",
                            "--no-wait")
        out = refused.communicate(timeout=60)[0]
        assert time.monotonic() - t0 < 20
        assert refused.returncode == 1 and "GPU gpu0 is busy" in out and str(holder_dir) in out, out
        assert json.loads((tmp_path / "r2" / "meta.json").read_text())["status"] == "failed"
    finally:
        holder.kill()
        holder.wait()


def test_cpu_run_takes_no_lock_even_while_gpu0_is_held(team_env, tmp_path):
    from hackathon.core import gpus

    spec = write_tiny_spec(tmp_path / "spec.yaml", {"cer": 0.2})
    with gpus.hold(["gpu0"], run_dir="/elsewhere"):
        proc = start_run(team_env, "asr", spec, tmp_path / "cpu", "--no-wait")
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "gpu_locks" not in json.loads((tmp_path / "cpu" / "meta.json").read_text())


HOLDER = """
import sys, time
from hackathon.core import gpus
with gpus.hold(["gpu0"], run_dir="/runs/asr/holder"):
    print("HOLDING", flush=True)
    time.sleep(120)
"""


def test_cli_hackathon_run_asr_queues_behind_the_gpu_and_runs_after_kill9(team_env, tmp_path, hackathon_bin):
    """The real command on the real ASR pipeline (its prepare stage: no training), gpu0 stood in for."""
    env = {**team_env, "HACKATHON_LOCK_KEYS": "gpu0"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "HOLDING"
    run_dir = tmp_path / "runs" / "asr" / "cli"
    cmd = [hackathon_bin, "run", "asr", "--only", "prepare", "--run-dir", str(run_dir)]
    try:
        refused = subprocess.run(cmd[:-2] + ["--run-dir", str(tmp_path / "refused"), "--no-wait"], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1 and "GPU gpu0 is busy" in refused.stderr and "fix:" in refused.stderr
        queued = subprocess.Popen(cmd, env={**env, "COLUMNS": "300"}, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        line = ""
        while "waiting for GPU gpu0" not in line:
            line = queued.stdout.readline()
            assert line, "hackathon run asr ended without queueing"
        assert f"pid {holder.pid}" in line and "/runs/asr/holder" in line
        time.sleep(1.0)
        assert queued.poll() is None and json.loads((run_dir / "meta.json").read_text())["status"] == "queued"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    rest = queued.communicate(timeout=300)[0]
    assert queued.returncode == 0, rest
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "done" and meta["stages"]["prepare"]["status"] == "done"
    assert meta["gpu_locks"] == ["gpu0"] and (run_dir / "data" / "train_manifest.json").exists()


def test_run_locks_the_gpus_its_trainer_config_names(team_env, tmp_path):
    """No stand-in keys: the GPUs come from trainer.accelerator/devices and (a stand-in) nvidia-smi."""
    from tests.team.test_gpus import FAKE_NVIDIA_SMI

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**team_env, "PATH": f"{bin_dir}:{team_env['PATH']}", "CUDA_VISIBLE_DEVICES": "1,0"}
    one = start_run(env, "asr", write_tiny_spec(tmp_path / "one.yaml", {"cer": 0.2}, accelerator="gpu", devices=1),
                    tmp_path / "one")
    both = start_run(env, "asr", write_tiny_spec(tmp_path / "two.yaml", {"cer": 0.2}, accelerator="gpu", devices=2),
                     tmp_path / "two")
    assert [p.communicate(timeout=60)[0] is not None and p.returncode for p in (one, both)] == [0, 0]
    # devices=1 under CUDA_VISIBLE_DEVICES=1,0 is physical GPU 1
    assert json.loads((tmp_path / "one" / "meta.json").read_text())["gpu_locks"] == ["gpu1"]
    assert json.loads((tmp_path / "two" / "meta.json").read_text())["gpu_locks"] == ["gpu0", "gpu1"]
