"""`hackathon slurm render TASK [k=v ...] --out FILE`: an sbatch script for a launcher=torchrun run.

The script (submitted with `sbatch FILE`):
- asks for --nodes N, one task per node, --gpus-per-node G;
- starts `hackathon run TASK ... launcher=torchrun` once per node with srun; the c10d rendezvous is
  hosted on the job's first node (scontrol show hostnames), so no node rank is needed;
- survives preemption and the time limit: `--requeue`, and `--signal=B:USR1@<grace>` makes SLURM warn
  the batch shell, whose trap requeues the job. The run dir is a fixed path (not the job id), so the
  requeued job types the same command again and every stage resumes (training from its last checkpoint).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from hackathon.core.atomic import atomic_write_text
from hackathon.cluster import check_name, check_task_overrides, run_command
from hackathon.core.errors import HackathonError

RDZV_PORT = 29400
LAUNCH_BEGIN = "# --- launch (one `hackathon run` per node) ---"
LAUNCH_END = "# --- end launch ---"

TEMPLATE = """\
#!/bin/bash
# hackathon {task} on SLURM: {nodes} node(s) x {gpus} GPU(s), TorchElastic (torchrun) under srun.
# Submit: sbatch {script}    Watch: squeue -u "$USER"; tail -f {log_dir}/slurm-<jobid>.out
#SBATCH --job-name={name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --requeue
#SBATCH --signal=B:USR1@{grace}
#SBATCH --open-mode=append
#SBATCH --output={log_dir}/slurm-%j.out
{partition}
set -euo pipefail

# Same run dir on every start (requeues included): the run resumes where it stopped.
RUN_DIR={run_dir}
export HACKATHON_RUNS={runs_root}
# The venv this script was rendered from (it must be on the shared filesystem).
VENV={venv}
# shellcheck source=/dev/null
source "$VENV/bin/activate"
cd {repo}

# The c10d rendezvous lives on the job's first node.
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RDZV_ENDPOINT="$HEAD_NODE:{port}"

requeue() {{
  echo "$(date -Is) SLURM signalled the end of this allocation: requeueing job $SLURM_JOB_ID (run dir $RUN_DIR)"
  scontrol requeue "$SLURM_JOB_ID"
}}
trap requeue USR1

echo "$(date -Is) job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, rendezvous $RDZV_ENDPOINT, run dir $RUN_DIR"
{launch_begin}
srun --kill-on-bad-exit=0 --ntasks-per-node=1 \\
  {command} &
{launch_end}
# wait in the background so the USR1 trap runs as soon as the signal arrives
wait $!
"""


def sbatch_script(task: str, overrides: Sequence[str] = (), spec: str | None = None, name: str | None = None,
                  nodes: int = 2, min_nodes: int | None = None, gpus_per_node: int = 1, cpus_per_task: int = 16,
                  time_limit: str = "24:00:00", partition: str | None = None, run_dir: str | None = None,
                  max_restarts: int = 3, grace_seconds: int = 120, venv: str | None = None,
                  script: str = "job.sbatch") -> str:
    from hackathon.core.paths import REPO_ROOT, runs_root

    name = check_name(name or f"hackathon-{task}")
    if nodes < 1 or gpus_per_node < 1:
        raise HackathonError("--nodes and --gpus-per-node must be at least 1.", fix="e.g. --nodes 2 --gpus-per-node 4")
    low = nodes if min_nodes is None else min_nodes
    if not 1 <= low <= nodes:
        raise HackathonError(f"--min-nodes {low} must be between 1 and --nodes {nodes}.",
                             fix="Leave --min-nodes out for a fixed-size job.")
    check_task_overrides(task, spec, overrides)
    root = runs_root().resolve()
    run_dir = run_dir or str(root / task / name)
    nnodes = str(nodes) if low == nodes else f"{low}:{nodes}"
    # Quoted for the shell; the run dir and the endpoint stay variables the script fills in (on the first node).
    argv = run_command(task, spec, overrides, "@RUN_DIR@", nnodes, gpus_per_node, "@RDZV@", max_restarts)
    variables = {"@RUN_DIR@": '"$RUN_DIR"', "elastic.rdzv_endpoint=@RDZV@": 'elastic.rdzv_endpoint="$RDZV_ENDPOINT"'}
    words = [variables.get(a, shlex.quote(a)) for a in argv]
    command = " \\\n  ".join(" ".join(words[i:i + 4]) for i in range(0, len(words), 4))
    return TEMPLATE.format(
        task=task, nodes=nodes, gpus=gpus_per_node, cpus=int(cpus_per_task), time=time_limit, name=name,
        grace=int(grace_seconds), log_dir=shlex.quote(str(Path(run_dir).parent)),
        partition=f"#SBATCH --partition={partition}" if partition else "# (default partition)",
        run_dir=shlex.quote(run_dir), runs_root=shlex.quote(str(root)), venv=shlex.quote(venv or sys.prefix),
        repo=shlex.quote(str(REPO_ROOT)), port=RDZV_PORT, command=command, script=script,
        launch_begin=LAUNCH_BEGIN, launch_end=LAUNCH_END)


def render(task: str, out: Path, overrides: Sequence[str] = (), spec: str | None = None, **options) -> Path:
    if out.exists():
        raise HackathonError(f"{out} already exists.", fix="Pass another --out file or remove the old one.")
    text = sbatch_script(task, overrides, spec, script=str(out), **options)
    atomic_write_text(out, text)
    out.chmod(0o755)
    return out
