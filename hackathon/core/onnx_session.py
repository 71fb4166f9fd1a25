"""ONNX Runtime sessions for every exported model (the export checks and the server use the same ones).

CUDA first when this onnxruntime build has it (onnxruntime-gpu on a GPU machine), else CPU: what was
checked at export time is what serves. A missing or unreadable model file is a HackathonError with a fix.
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.errors import HackathonError


def providers(prefer_gpu: bool = True) -> list[str]:
    """Execution providers in order of preference, limited to what this onnxruntime build offers."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = (["CUDAExecutionProvider"] if prefer_gpu else []) + ["CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def create_session(path: str | Path, missing_fix: str, prefer_gpu: bool = True, threads: int | None = None):
    """An onnxruntime.InferenceSession for `path`; `missing_fix` tells the user how to produce the file."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise HackathonError(f"{path} not found: this run has no ONNX export.", fix=missing_fix)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers(prefer_gpu))
    except Exception as exc:  # onnxruntime raises its own exception types (InvalidGraph, NoSuchFile, ...)
        raise HackathonError(f"onnxruntime cannot load {path}: {exc}", fix=missing_fix) from exc


def input_names(session) -> set[str]:
    return {i.name for i in session.get_inputs()}
