"""Cluster job files for launcher=torchrun runs: a Kubeflow PyTorchJob (k8s.py), an sbatch script
(slurm.py), a project image (image.py). They only write files the cluster's own tools submit
(kubectl apply, sbatch); nothing here schedules or talks to a cluster.

Every node of such a job runs the same `hackathon run TASK ... launcher=torchrun --run-dir DIR` on a
shared filesystem (hackathon/core/elastic.py: one process coordinates, the others join its training stages).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from hackathon.core.atomic import atomic_write_text
from hackathon.core.errors import HackathonError

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a DNS-1123 label: k8s object / SLURM job names


def check_name(name: str, what: str = "--name") -> str:
    if not NAME.match(name) or len(name) > 50:
        raise HackathonError(f"{what} {name!r} is not a valid name.",
                             fix="Use lower-case letters, digits and '-', at most 50 characters, e.g. asr-exp7.")
    return name


def check_task_overrides(task: str, spec: str | None, overrides: Sequence[str]):
    """The job's config resolved here first: a typo fails now, not on the cluster an hour later."""
    from hackathon.core.config import load_config
    from hackathon.core.paths import TASKS

    if task not in TASKS:
        raise HackathonError(f"Unknown task {task!r}.", fix=f"Use one of: {', '.join(TASKS)}.")
    reserved = [o for o in overrides if o.split("=", 1)[0].lstrip("+") in
                ("launcher", "elastic.nnodes", "elastic.rdzv_endpoint", "elastic.nproc_per_node")]
    if reserved:
        raise HackathonError(f"{reserved[0]} is set by the job file itself.",
                             fix="Use the command's options (--nodes/--min-nodes/--max-nodes, --gpus-per-node) instead.")
    return load_config(task, spec, overrides)


def write_new_files(files: dict[Path, str]) -> list[Path]:
    """Write every file, or none when one of them already exists (a job folder is never overwritten)."""
    existing = [p for p in files if p.exists()]
    if existing:
        raise HackathonError(f"{existing[0]} already exists.", fix="Pass another --out folder or remove the old files.")
    for path, text in files.items():
        atomic_write_text(path, text)
    return list(files)


def run_command(task: str, spec: str | None, overrides: Sequence[str], run_dir: str, nnodes: str,
                nproc_per_node: int, rdzv_endpoint: str, max_restarts: int) -> list[str]:
    """The `hackathon run` argv every node of a cluster job runs."""
    argv = ["hackathon", "run", task]
    if spec:
        argv += ["--spec", spec]
    return argv + list(overrides) + [
        "launcher=torchrun", f"elastic.nnodes={nnodes}", f"elastic.nproc_per_node={nproc_per_node}",
        f"elastic.rdzv_endpoint={rdzv_endpoint}", f"elastic.max_restarts={max_restarts}", "--run-dir", run_dir]
