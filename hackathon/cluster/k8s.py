"""`hackathon k8s render TASK [k=v ...] --out DIR`: a Kubeflow PyTorchJob (kubeflow.org/v1, elastic) and
the shared volume claim it mounts; `hackathon k8s image --out DIR`: the project's Dockerfile.

The job (applied with `kubectl apply -f DIR/`, see docs/MULTI_GPU.md):
- `elasticPolicy`: rdzvBackend c10d, minReplicas..maxReplicas worker pods, maxRestarts, nProcPerNode.
  The training operator (v1) starts the worker pods and a service per pod; pod `<name>-worker-0` hosts
  the c10d rendezvous on port 29400.
- every worker pod runs the same `hackathon run TASK ... launcher=torchrun --run-dir /runs/<task>/<name>`
  (hackathon/core/elastic.py: the first to claim the run dir coordinates, the others join its training
  stages under their own torchrun agent); `restartPolicy: OnFailure` brings a lost pod back, and it
  rejoins at the next rendezvous.
- one ReadWriteMany PVC holds the data (/data) and the runs (/runs): every pod sees the same run dir.
- /dev/shm is a memory emptyDir (the container default of 64 MB kills DataLoader workers).
- `nvidia.com/gpu` limits = GPUs per pod; the NGC pull secret is referenced by name only (create it with
  `kubectl create secret docker-registry ...`: the key never appears in a manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hackathon.cluster import check_name, check_task_overrides, run_command, write_new_files
from hackathon.core.errors import HackathonError

API_VERSION = "kubeflow.org/v1"
RDZV_PORT = 29400
DEFAULT_IMAGE = "registry.example.com/team/hackathon:latest"
DEFAULT_PULL_SECRET = "ngc-registry"


def pytorchjob(task: str, overrides: Sequence[str] = (), spec: str | None = None, name: str | None = None,
               image: str = DEFAULT_IMAGE, min_nodes: int = 1, max_nodes: int = 2, gpus_per_node: int = 1,
               max_restarts: int = 3, pvc: str = "hackathon-shared", pull_secret: str = DEFAULT_PULL_SECRET,
               shm_size: str = "16Gi", cpu: str = "8", memory: str = "64Gi", namespace: str | None = None) -> dict:
    """The PyTorchJob as a plain dict (what `kubectl apply` reads)."""
    name = check_name(name or f"hackathon-{task}")
    check_name(pvc, "--pvc")
    check_name(pull_secret, "--pull-secret")
    if not 1 <= min_nodes <= max_nodes:
        raise HackathonError(f"--min-nodes {min_nodes} / --max-nodes {max_nodes} do not make a range.",
                             fix="Use 1 <= --min-nodes <= --max-nodes.")
    if gpus_per_node < 1:
        raise HackathonError("--gpus-per-node must be at least 1.", fix="Pass --gpus-per-node 1 (or more).")
    check_task_overrides(task, spec, overrides)
    run_dir = f"/runs/{task}/{name}"
    args = run_command(task, spec, overrides, run_dir, f"{min_nodes}:{max_nodes}", gpus_per_node,
                       f"{name}-worker-0:{RDZV_PORT}", max_restarts)
    container = {
        "name": "pytorch",  # the training operator looks for this container name
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": args[:1],
        "args": args[1:],
        "env": [
            {"name": "HACKATHON_RUNS", "value": "/runs"},
            {"name": "HACKATHON_DEMO_DATA", "value": "/data/demo_data"},
            # SQLite in WAL mode needs a local disk: each pod keeps its own registry and GPU locks.
            {"name": "HACKATHON_REGISTRY", "value": "/scratch/registry.sqlite"},
            {"name": "HACKATHON_LOCK_DIR", "value": "/scratch/locks"},
            {"name": "NCCL_DEBUG", "value": "WARN"},
        ],
        "ports": [{"name": "c10d", "containerPort": RDZV_PORT, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": str(gpus_per_node)},
                      "requests": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus_per_node)}},
        "volumeMounts": [
            {"name": "shared", "mountPath": "/data", "subPath": "data"},
            {"name": "shared", "mountPath": "/runs", "subPath": "runs"},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    }
    labels = {"app.kubernetes.io/name": "hackathon", "hackathon/task": task}
    pod = {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [container],
            "imagePullSecrets": [{"name": pull_secret}],
            "volumes": [
                {"name": "shared", "persistentVolumeClaim": {"claimName": pvc}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }
    metadata = {"name": name, "labels": dict(labels)}
    if namespace:
        metadata["namespace"] = check_name(namespace, "--namespace")
    return {
        "apiVersion": API_VERSION,
        "kind": "PyTorchJob",
        "metadata": metadata,
        "spec": {
            "elasticPolicy": {"rdzvBackend": "c10d", "rdzvPort": RDZV_PORT, "minReplicas": min_nodes,
                              "maxReplicas": max_nodes, "maxRestarts": max_restarts},
            "nprocPerNode": str(gpus_per_node),
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": max(3, max_restarts)},
            "pytorchReplicaSpecs": {
                "Worker": {"replicas": max_nodes, "restartPolicy": "OnFailure", "template": pod},
            },
        },
    }


def shared_pvc(name: str = "hackathon-shared", size: str = "500Gi", storage_class: str | None = None,
               namespace: str | None = None) -> dict:
    """The ReadWriteMany claim for data and runs (an NFS / CephFS / Filestore class on the cluster)."""
    spec = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    metadata = {"name": check_name(name, "--pvc")}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def validate(manifest: dict) -> object:
    """Deserialize with the client models (kubeflow training SDK for PyTorchJob, kubernetes for the
    rest): unknown kinds, missing required fields or wrong types fail here. Returns the model object."""
    import json

    kind = manifest.get("kind")
    if kind == "PyTorchJob":
        from kubeflow.training import ApiClient

        klass = "KubeflowOrgV1PyTorchJob"
    elif kind == "PersistentVolumeClaim":
        from kubernetes.client import ApiClient

        klass = "V1PersistentVolumeClaim"
    else:
        raise HackathonError(f"No model to validate a {kind!r} manifest.", fix="Only PyTorchJob and PVC are rendered.")

    class Response:  # what ApiClient.deserialize reads
        data = json.dumps(manifest)

    return ApiClient().deserialize(Response(), klass)


def to_yaml(manifest: dict) -> str:
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)


def render(task: str, out: Path, overrides: Sequence[str] = (), spec: str | None = None, name: str | None = None,
           pvc_size: str = "500Gi", storage_class: str | None = None, **job_options) -> list[Path]:
    """Write DIR/pvc.yaml and DIR/pytorchjob.yaml (validated); refuses to overwrite."""
    job = pytorchjob(task, overrides, spec, name, **job_options)
    claim = shared_pvc(job_options.get("pvc", "hackathon-shared"), pvc_size, storage_class,
                       job_options.get("namespace"))
    for manifest in (claim, job):
        validate(manifest)
    return write_new_files({out / "pvc.yaml": to_yaml(claim), out / "pytorchjob.yaml": to_yaml(job)})
