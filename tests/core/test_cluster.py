"""Cluster job files: the Kubeflow PyTorchJob and PVC validated with the Kubeflow training SDK and the
Kubernetes client models, the Dockerfile, and the sbatch script (shellcheck-clean; its launch run on
this machine with SLURM's commands and variables faked: 1 node, 127.0.0.1, CPU)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hackathon.cli import app
from hackathon.core.errors import HackathonError

REPO = Path(__file__).resolve().parents[2]


def deserialize(client_cls, manifest: dict, klass: str):
    class Response:
        data = json.dumps(manifest)

    return client_cls().deserialize(Response(), klass)


# ----------------------------------------------------------------------------- Kubernetes

def test_k8s_render_writes_a_valid_elastic_pytorchjob_and_rwx_claim(tmp_path, monkeypatch):
    from kubeflow.training import ApiClient as KubeflowClient
    from kubeflow.training.models import KubeflowOrgV1PyTorchJob
    from kubernetes.client import ApiClient as K8sClient
    from kubernetes.client import V1PersistentVolumeClaim, V1PodTemplateSpec

    monkeypatch.setenv("NGC_API_KEY", "nvapi-SECRET-never-in-a-manifest")
    out = tmp_path / "k8s"
    result = CliRunner().invoke(app, ["k8s", "render", "asr", "trainer.max_epochs=30", "--spec", "workstation",
                                      "--out", str(out), "--name", "asr-exp7", "--min-nodes", "2", "--max-nodes", "4",
                                      "--gpus-per-node", "8", "--max-restarts", "5", "--image", "reg.example/t/h:1"])
    assert result.exit_code == 0, result.output
    job_doc = yaml.safe_load((out / "pytorchjob.yaml").read_text())
    job = deserialize(KubeflowClient, job_doc, "KubeflowOrgV1PyTorchJob")
    assert isinstance(job, KubeflowOrgV1PyTorchJob)
    # round trip through the SDK model: a misspelt or misplaced field would be dropped and differ here
    assert KubeflowClient().sanitize_for_serialization(job) == job_doc
    assert job.api_version == "kubeflow.org/v1" and job.kind == "PyTorchJob" and job.metadata.name == "asr-exp7"
    ep = job.spec.elastic_policy
    assert (ep.rdzv_backend, ep.min_replicas, ep.max_replicas, ep.max_restarts) == ("c10d", 2, 4, 5)
    worker = job.spec.pytorch_replica_specs["Worker"]
    assert worker.replicas == 4 and worker.restart_policy == "OnFailure"
    # the pod template is a real Kubernetes PodTemplateSpec (required fields checked by the client model)
    pod = deserialize(K8sClient, job_doc["spec"]["pytorchReplicaSpecs"]["Worker"]["template"], "V1PodTemplateSpec")
    assert isinstance(pod, V1PodTemplateSpec)
    assert K8sClient().sanitize_for_serialization(pod) == job_doc["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    c = pod.spec.containers[0]
    argv = c.command + c.args
    assert argv[:4] == ["hackathon", "run", "asr", "--spec"] and "trainer.max_epochs=30" in argv
    for expected in ("launcher=torchrun", "elastic.nnodes=2:4", "elastic.nproc_per_node=8",
                     "elastic.rdzv_endpoint=asr-exp7-worker-0:29400", "elastic.max_restarts=5"):
        assert expected in argv
    assert argv[-2:] == ["--run-dir", "/runs/asr/asr-exp7"]
    assert c.resources.limits["nvidia.com/gpu"] == "8" and c.image == "reg.example/t/h:1"
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["dshm"].empty_dir.medium == "Memory"
    assert {m.mount_path: m.name for m in c.volume_mounts}["/dev/shm"] == "dshm"
    claim = volumes["shared"].persistent_volume_claim.claim_name
    assert {m.mount_path for m in c.volume_mounts if m.name == "shared"} == {"/data", "/runs"}
    assert [s.name for s in pod.spec.image_pull_secrets] == ["ngc-registry"]
    pvc_doc = yaml.safe_load((out / "pvc.yaml").read_text())
    pvc = deserialize(K8sClient, pvc_doc, "V1PersistentVolumeClaim")
    assert isinstance(pvc, V1PersistentVolumeClaim) and pvc.metadata.name == claim
    assert pvc.spec.access_modes == ["ReadWriteMany"]
    assert K8sClient().sanitize_for_serialization(pvc) == pvc_doc
    text = (out / "pytorchjob.yaml").read_text() + (out / "pvc.yaml").read_text()
    assert "SECRET" not in text and "nvapi" not in text
    # the job's own command line resolves against the spec here (a typo would fail now, not on the cluster)
    from hackathon.core import elastic
    from hackathon.core.config import load_config

    cfg = load_config("asr", "workstation", [a for a in argv[5:-2]])
    assert elastic.launcher(cfg) == "torchrun" and elastic.settings(cfg).max_nodes == 4


def test_client_models_reject_a_broken_manifest():
    from hackathon.cluster import k8s

    job = k8s.pytorchjob("detect", name="det")
    del job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        k8s.validate(job)


@pytest.mark.parametrize("args, message", [
    (["--name", "Bad_Name"], "not a valid name"),
    (["--min-nodes", "3", "--max-nodes", "2"], "do not make a range"),
    (["trainer.max_epoch=3"], "Unknown config key"),
    (["launcher=local"], "set by the job file"),
])
def test_k8s_render_refuses_bad_input_with_a_fix(tmp_path, args, message):
    result = CliRunner().invoke(app, ["k8s", "render", "tts", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and message in result.output and "fix:" in result.output
    assert not (tmp_path / "o" / "pytorchjob.yaml").exists()


def test_k8s_render_never_overwrites(tmp_path):
    from hackathon.cluster import k8s

    k8s.render("tts", tmp_path)
    before = (tmp_path / "pytorchjob.yaml").read_text()
    with pytest.raises(HackathonError, match="already exists"):
        k8s.render("tts", tmp_path, ["fastpitch.trainer.max_epochs=5"])
    assert (tmp_path / "pytorchjob.yaml").read_text() == before


def test_k8s_image_writes_a_dockerfile_on_an_ngc_base(tmp_path):
    result = CliRunner().invoke(app, ["k8s", "image", "--out", str(tmp_path / "img")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "img" / "Dockerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "ARG BASE_IMAGE=nvcr.io/nvidia/nemo:25.04" and lines[1] == "FROM ${BASE_IMAGE}"
    for src in ("hackathon", "tasks", "data_tools", "specs"):
        assert f"COPY {src} ./{src}" in text and (REPO / src).is_dir()
    assert 'pip install --no-cache-dir -e ".[asr,tts,detect,cluster]"' in text
    assert "API_KEY" not in text
    ignore = (tmp_path / "img" / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1] == "**" and "!hackathon" in ignore and "!runs" not in ignore


# ----------------------------------------------------------------------------- SLURM

def test_slurm_render_is_shellcheck_clean_and_asks_for_requeue(tmp_path):
    out = tmp_path / "job.sbatch"
    result = CliRunner().invoke(app, ["slurm", "render", "detect", "trainer.max_epochs=3", "--out", str(out), "--nodes", "4",
                                      "--min-nodes", "2", "--gpus-per-node", "8", "--partition", "gpu",
                                      "--run-dir", "/shared/runs/detect/exp 1"])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    for line in ("#SBATCH --nodes=4", "#SBATCH --gpus-per-node=8", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@120",
                 "#SBATCH --partition=gpu", "#SBATCH --ntasks-per-node=1", "RUN_DIR='/shared/runs/detect/exp 1'",
                 "trap requeue USR1", 'scontrol requeue "$SLURM_JOB_ID"'):
        assert line in text
    assert "elastic.nnodes=2:4" in text and 'elastic.rdzv_endpoint="$RDZV_ENDPOINT"' in text
    check = subprocess.run(["shellcheck", "-s", "bash", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    again = CliRunner().invoke(app, ["slurm", "render", "detect", "--out", str(out)])
    assert again.exit_code != 0 and "already exists" in again.output


FAKE_SCONTROL = """#!/bin/bash
# stand-in for SLURM's scontrol: hostnames of the (one) faked node; requeue requests are logged
if [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; exit 0; fi
echo "$*" >> "$FAKE_SLURM_LOG"
"""
FAKE_SRUN = """#!/bin/bash
# stand-in for srun on one node: drop srun's own options, run the command
while [[ "$1" == --* ]]; do shift; done
exec "$@"
"""


@pytest.mark.slow
def test_sbatch_script_launch_runs_here_and_requeues_on_usr1(tmp_path, hackathon_bin):
    """The rendered script itself, with `scontrol`/`srun` faked and SLURM's variables set (1 node,
    127.0.0.1, CPU): USR1 (SLURM's warning before the time limit) requeues the job; the requeued job
    (the same script again) resumes the same run dir and finishes the tiny ASR run under torchrun."""
    from tests.asr.conftest import tiny_spec

    spec = tiny_spec(tmp_path / "tiny.yaml", **{"trainer.max_epochs": 6})
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (fake / name).write_text(body)
        (fake / name).chmod(0o755)
    run_dir = tmp_path / "runs" / "asr" / "job"
    script = tmp_path / "job.sbatch"
    result = CliRunner().invoke(app, ["slurm", "render", "asr", "export.onnx=false", "--spec", str(spec), "--out",
                                      str(script), "--nodes", "1", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "PATH": f"{fake}:{Path(hackathon_bin).parent}:{os.environ['PATH']}",
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "127.0.0.1", "SLURM_NNODES": "1",
           "FAKE_SLURM_LOG": str(tmp_path / "scontrol.log"), "PYTHONPATH": str(REPO)}
    # 1) preempted mid-training: SLURM sends USR1 to the batch shell
    first = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    last = run_dir / "checkpoints" / "fit" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.3)
    assert last.exists(), first.communicate()[0].decode()[-3000:] if first.poll() is not None else "no checkpoint"
    from tests.team.elastic_harness import descendants

    step = descendants(first.pid)  # srun's `hackathon run`, its torchrun agent and worker
    os.kill(first.pid, signal.SIGUSR1)
    first.wait(timeout=60)
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    for pid in step:  # SLURM ends the allocation's job steps on requeue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1)
    # 2) the requeued job: same script, same run dir
    second = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    meta = json.loads((run_dir / "meta.json").read_text())
    train = meta["stages"]["train"]
    assert meta["status"] == "done" and train["status"] == "done" and train["attempts"] == 2
    assert train["elastic"]["launcher"] == "torchrun" and train["elastic"]["world_sizes"] == [1]
    assert train["resumed"] is True and (train["resumed_from"] or {}).get("epochs_done", 0) >= 1
    assert shutil.which("bash")
