"""`hackathon k8s image --out DIR`: a Dockerfile (+ its .dockerignore) for the project on an NGC NeMo /
PyTorch base, the image the PyTorchJob's pods run. Build it from the repo root:

    docker build -f DIR/Dockerfile -t REGISTRY/team/hackathon:TAG .

(pulling the nvcr.io base needs `hackathon ngc login` first.)
"""

from __future__ import annotations

from pathlib import Path

from hackathon.cluster import write_new_files
from hackathon.core.errors import HackathonError

DEFAULT_BASE = "nvcr.io/nvidia/nemo:25.04"
EXTRAS = "asr,tts,detect,cluster"
SOURCES = ("hackathon", "tasks", "data_tools", "specs")

DOCKERFILE = """\
# syntax=docker/dockerfile:1
# hackathon on an NGC base: CUDA, NCCL, PyTorch (and NeMo) come from the base image.
# Build from the repository root:  docker build -f {rel}/Dockerfile -t REGISTRY/team/hackathon:TAG .
ARG BASE_IMAGE={base}
FROM ${{BASE_IMAGE}}

# espeak-ng: demo speech; sox/ffmpeg: audio conversion (data_tools/audio.py).
RUN apt-get update \\
 && apt-get install -y --no-install-recommends espeak-ng sox ffmpeg \\
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/hackathon
COPY pyproject.toml README.md ./
{copies}
# torch is unpinned in pyproject.toml, so the base image's CUDA build is kept.
RUN pip install --no-cache-dir -e ".[{extras}]"

# Runs and data live on the job's shared volume (see hackathon k8s render).
ENV HACKATHON_RUNS=/runs \\
    HACKATHON_DEMO_DATA=/data/demo_data \\
    PYTHONUNBUFFERED=1
CMD ["hackathon", "--help"]
"""

DOCKERIGNORE = """\
# Only the sources go into the image: no runs, data, weights or virtual environments.
**
!pyproject.toml
!README.md
{allow}
**/__pycache__
"""


def dockerfile(base: str = DEFAULT_BASE, rel: str = "k8s") -> str:
    if not base or any(c.isspace() for c in base):
        raise HackathonError(f"--base {base!r} is not an image reference.", fix=f"e.g. --base {DEFAULT_BASE}")
    copies = "\n".join(f"COPY {d} ./{d}" for d in SOURCES)
    return DOCKERFILE.format(base=base, rel=rel, copies=copies, extras=EXTRAS)


def write_image_files(out: Path, base: str = DEFAULT_BASE) -> list[Path]:
    """DIR/Dockerfile and DIR/Dockerfile.dockerignore (BuildKit reads the ignore file next to the
    Dockerfile). Refuses to overwrite."""
    ignore = DOCKERIGNORE.format(allow="\n".join(f"!{d}" for d in SOURCES))
    return write_new_files({out / "Dockerfile": dockerfile(base, str(out)), out / "Dockerfile.dockerignore": ignore})
