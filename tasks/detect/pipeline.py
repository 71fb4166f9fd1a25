"""`hackathon run detect`: build the stage list for the configured backend.

Shared: prepare -> split -> balance -> export (tasks/detect/stages.py).
backend=torch: train (the SSD on the one engine, hackathon/core/training.py) -> infer -> evaluate -> export_model
               (tasks/detect/ssd.py, evaluate.py, export_model.py: the detector's ONNX, checked against torchvision).
backend=tao:   the TAO helper's stages (tasks/detect/tao_pipeline.py: build_tao_stages), export_model
               collecting TAO's ONNX after tao_export.
"""

from __future__ import annotations

from hackathon.core.errors import HackathonError

BACKENDS = ("torch", "tao")


def build_stages(cfg):
    backend = str(cfg.get("backend", "torch"))
    if backend == "tao":
        from tasks.detect.tao_pipeline import build_tao_stages

        return build_tao_stages(cfg)
    if backend != "torch":
        raise HackathonError(f"Unknown detect backend {backend!r}.", fix=f"Use backend={' or backend='.join(BACKENDS)}.")
    from hackathon.core.runner import Stage
    from tasks.detect.evaluate import evaluate_stage
    from tasks.detect.export_model import export_torch_stage
    from tasks.detect.stages import shared_stages
    from tasks.detect.ssd import infer_stage, train_stage

    return shared_stages() + [
        Stage("train", train_stage, "train", trainer="trainer", config_keys=("seed", "model", "trainer")),
        Stage("infer", infer_stage, "evaluate", config_keys=("infer", "eval.split")),
        Stage("evaluate", evaluate_stage, "evaluate", config_keys=("eval",)),
        Stage("export_model", export_torch_stage, "export", config_keys=("onnx", "infer.score_threshold")),
    ]
