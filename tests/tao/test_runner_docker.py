"""The TAO runner against the real docker engine, with the stand-in image: mounts, uid mapping, logs,
exit codes, status.json, expected artifacts, pre-flight refusals, Ctrl-C/SIGTERM/timeout cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hackathon.core.errors import HackathonError
from tasks.detect.tao_mounts import INPUT, RESULTS, Mount, PathCheck, plan_for_run
from tasks.detect.tao_runner import TaoJob, find_containers, run_job

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[2]
SPEC = 'ssd_config {\n  arch: "resnet"\n  nlayers: 18\n}\ntraining_config {\n  num_epochs: 2\n}\n'


class Tripwire:
    """A docker client that fails the test if anything touches the engine."""

    def __getattr__(self, name):
        raise AssertionError(f"the engine was used ({name}) although the pre-flight should have refused")


def train_job(tmp_path: Path, image: str, labels: dict, envs=None, user=None, timeout_s=None, extra_checks=(),
              extra_mounts=()) -> TaoJob:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    spec = run / "spec.txt"
    spec.write_text(SPEC)
    plan = plan_for_run(run, envs=envs, user=user, shm_size="64m", extra_mounts=extra_mounts)
    results = run / "results"
    cmd = ["ssd", "train", "-e", plan.to_container(spec), "-r", plan.to_container(results)]
    checks = [PathCheck("argument -e", cmd[3], INPUT), PathCheck("argument -r", cmd[5], RESULTS), *extra_checks]
    return TaoJob(name="ssd train", image=image, command=cmd, plan=plan, checks=checks,
                  log_file=run / "logs" / "train.log", status_dir=results,
                  expected=[results / "weights" / "ssd_resnet18_epoch_002.hdf5"], gpus="none",
                  timeout_s=timeout_s, labels=labels, mounts_file=run / "mounts.json")


def test_success_streams_logs_checks_status_and_runs_as_invoker(tmp_path, standin_image, test_label, capsys):
    job = train_job(tmp_path, standin_image, test_label)
    result = run_job(job)
    weights = tmp_path / "run" / "results" / "weights" / "ssd_resnet18_epoch_002.hdf5"
    assert weights.exists() and result.exit_code == 0
    assert [s["status"] for s in result.statuses][0] == "STARTED" and result.statuses[-1]["status"] == "SUCCESS"
    log = job.log_file.read_text()
    assert "Epoch 2/2" in log and f"as uid {os.getuid()}:{os.getgid()}" in log
    assert "Epoch 2/2" in capsys.readouterr().out  # streamed to the console too
    for p in (weights, weights.parent, tmp_path / "run" / "results" / "status.json"):
        assert p.stat().st_uid == os.getuid(), f"{p} not owned by the invoking user"
    mounts = json.loads((tmp_path / "run" / "mounts.json").read_text())
    assert mounts["DockerOptions"]["user"] == f"{os.getuid()}:{os.getgid()}"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown a folder to a different test uid")
def test_container_runs_as_the_mapped_uid(tmp_path, standin_image, test_label):
    (tmp_path / "run").mkdir()
    os.chown(tmp_path / "run", 4321, 4321)
    job = train_job(tmp_path, standin_image, test_label, user="4321:4321")
    run_job(job)
    weights = tmp_path / "run" / "results" / "weights" / "ssd_resnet18_epoch_002.hdf5"
    assert (weights.stat().st_uid, weights.stat().st_gid) == (4321, 4321)
    assert "as uid 4321:4321" in job.log_file.read_text()


@pytest.mark.parametrize("mode,needle", [
    ("train:exit", "exited with code 3"),
    ("train:status", "status FAILURE"),
    ("train:noartifact", "did not write"),
])
def test_failures_fail_the_job(tmp_path, standin_image, test_label, mode, needle):
    results = tmp_path / "run" / "results"
    results.mkdir(parents=True)
    # an earlier successful attempt's status must not mask this attempt's failure
    (results / "status.json").write_text('{"status": "SUCCESS", "message": "old run"}\n')
    job = train_job(tmp_path, standin_image, test_label, envs={"TAO_STANDIN_FAIL": mode})
    with pytest.raises(HackathonError) as exc:
        run_job(job)
    assert needle in exc.value.message and str(job.log_file) in exc.value.fix
    if mode == "train:status":
        assert "exited 0" in exc.value.message


@pytest.mark.parametrize("case", ["outside_mounts", "missing_host_dir", "forbidden_mount"])
def test_preflight_refuses_before_any_container(tmp_path, standin_image, test_label, case):
    extra_checks, extra_mounts = [], []
    if case == "outside_mounts":
        extra_checks = [PathCheck("spec x.txt line 7 (training_config.pretrain_model_path)", "/pretrained/r18.hdf5", INPUT)]
    elif case == "missing_host_dir":
        extra_mounts = [Mount(tmp_path / "does-not-exist", "/workspace/data")]
    else:
        extra_mounts = [Mount(Path("/etc"), "/workspace/etc")]
    job = train_job(tmp_path, standin_image, test_label, extra_checks=extra_checks, extra_mounts=extra_mounts)
    with pytest.raises(HackathonError) as exc:
        run_job(job, client=Tripwire())
    assert exc.value.fix
    msg = exc.value.message
    assert {"outside_mounts": "line 7", "missing_host_dir": "does not exist", "forbidden_mount": "refused"}[case] in msg


def test_timeout_stops_and_removes_the_container(tmp_path, standin_image, test_label, docker_client):
    job = train_job(tmp_path, standin_image, test_label, envs={"TAO_STANDIN_SLEEP": "30"}, timeout_s=2)
    t0 = time.time()
    with pytest.raises(HackathonError, match="longer than its limit"):
        run_job(job)
    assert time.time() - t0 < 20
    assert not find_containers(docker_client, test_label)


# The runner process gets Python's own Ctrl-C handler, as in a terminal: started from a background job
# (`make test &`, some CI shells) it would inherit SIGINT ignored, and the Ctrl-C case would test nothing.
RUNNER_SCRIPT = textwrap.dedent("""
    import signal
    import sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from tests.tao.test_runner_docker import train_job
    from tasks.detect.tao_runner import run_job
    job = train_job(Path({tmp!r}), {image!r}, {labels!r}, envs={{"TAO_STANDIN_SLEEP": "60"}})
    run_job(job)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_leave_no_container(tmp_path, standin_image, test_label, docker_client, sig):
    script = RUNNER_SCRIPT.format(repo=str(REPO), tmp=str(tmp_path), image=standin_image, labels=test_label)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    while not find_containers(docker_client, test_label):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "container never started"
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)  # stopping + removing the container is slow on a loaded 2-core CI machine
    assert proc.returncode != 0, out
    assert "KeyboardInterrupt" in out
    assert not find_containers(docker_client, test_label), "container survived the interrupt"


def test_missing_image_pull_fails_with_a_clear_error(tmp_path, docker_client, test_label):
    job = train_job(tmp_path, "localhost:1/tao-toolkit:none", test_label)
    with pytest.raises(HackathonError) as exc:
        run_job(job)
    assert "Cannot pull localhost:1/tao-toolkit:none" in exc.value.message and "docker load" in exc.value.fix


def test_gpus_without_nvidia_runtime_gives_the_doctors_fix(tmp_path, standin_image, test_label, docker_client):
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the nvidia runtime: GPU requests succeed here")
    from hackathon.core.docker import FIX_NVIDIA

    job = train_job(tmp_path, standin_image, test_label)
    job.gpus = "all"
    with pytest.raises(HackathonError) as exc:
        run_job(job)
    assert exc.value.fix == FIX_NVIDIA
    assert not find_containers(docker_client, test_label)
