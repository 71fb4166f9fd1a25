"""The Python-backend models of the deployed repository (`hackathon deploy triton-repo`): asr, tts, detect
and gate, run by Triton's Python backend inside the NGC container (model.py imports this class).

asr/tts/detect: the project's predictor (tasks/<task>/onnx_infer.py `load(run_dir)`) over the repository's
run folder, with every ONNX Runtime session it would open replaced by a BLS call to the network model that
serves that ONNX file on the GPU (hackathon_model.json maps file -> model). So the pre/post-processing is
the code that `hackathon serve` and the export checks run, and only the network execution moves.
gate: BLS to asr, detect and tts; the decision is hackathon/serve/gate.py.

Every request is checked with hackathon/serve/inputs.py first; a bad one gets TritonError(INVALID_ARG)
(HTTP 400 / gRPC INVALID_ARGUMENT) and the others in the batch go on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

try:  # only inside Triton's Python backend
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - imported for documentation/tests outside Triton
    pb_utils = None


def _to_numpy(tensor) -> np.ndarray:
    if tensor.is_cpu():
        return tensor.as_numpy()
    from torch.utils.dlpack import from_dlpack

    return from_dlpack(tensor.to_dlpack()).cpu().numpy()


def bls(model: str, inputs: dict, outputs: list[str]) -> dict:
    """One synchronous BLS call; a failed call raises with Triton's message."""
    request = pb_utils.InferenceRequest(model_name=model, requested_output_names=list(outputs),
                                        inputs=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()])
    response = request.exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return {name: _to_numpy(pb_utils.get_output_tensor_by_name(response, name)) for name in outputs}


class _Arg:
    def __init__(self, name: str):
        self.name = name


class BlsSession:
    """The subset of onnxruntime.InferenceSession the predictors use, answered by a Triton model."""

    def __init__(self, spec: dict):
        self.model, self._inputs, self._outputs = spec["model"], spec["inputs"], spec["outputs"]

    def get_inputs(self):
        return [_Arg(n) for n in self._inputs]

    def get_outputs(self):
        return [_Arg(n) for n in self._outputs]

    def run(self, output_names, feed: dict):
        names = list(output_names or self._outputs)
        result = bls(self.model, feed, names)
        return [result[n] for n in names]


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        self.settings = json.loads((folder / "hackathon_model.json").read_text(encoding="utf-8"))
        self.kind = self.settings["model"]
        self.limits = self.settings["limits"]
        if self.kind == "gate":
            return
        import importlib

        import hackathon.core.onnx_session as onnx_session
        from hackathon.serve.server import Models

        sessions = {name: BlsSession(spec) for name, spec in self.settings["bls"].items()}
        original = onnx_session.create_session

        def create_session(path, missing_fix, prefer_gpu=True, threads=None):
            return sessions[Path(path).name] if Path(path).name in sessions else original(path, missing_fix,
                                                                                          prefer_gpu, threads)

        onnx_session.create_session = create_session  # this stub process only
        try:
            predictor = importlib.import_module(f"tasks.{self.kind}.onnx_infer").load(folder / "run", prefer_gpu=False)
        finally:
            onnx_session.create_session = original
        self.models = Models({self.kind: predictor}, None, limits=self.limits)
        self.run_rows = getattr(self.models, f"run_{self.kind}")

    def execute(self, requests):
        from hackathon.serve.inputs import BadInput, decode_request

        responses = []
        for request in requests:
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            try:
                decoded = decode_request(self.kind, inputs, self.limits)
            except BadInput as exc:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)))
                continue
            try:
                outputs = self._gate(inputs, decoded) if self.kind == "gate" else self._predict(decoded)
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in outputs.items()]))
            except Exception as exc:  # noqa: BLE001 - a server-side failure of this request only
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.kind}: {exc}")))
        return responses

    def _predict(self, decoded: dict) -> dict:
        from hackathon.serve.server import _stack

        return _stack(self.run_rows(decoded))

    def _gate(self, inputs: dict, decoded: dict) -> dict:
        from hackathon.serve.gate import decide
        from hackathon.serve.server import _stack

        rows = []
        for i, name in enumerate(decoded["name"]):
            transcript = bls("asr", {"audio": inputs["audio"][i:i + 1]}, ["text"])["text"].reshape(-1)[0].decode()
            found = bls("detect", {"image": inputs["image"][i:i + 1]}, ["scores", "labels"])
            labels = [v.decode() for v in found["labels"].reshape(-1) if v]
            d = decide(transcript, found["scores"].reshape(-1)[:len(labels)], labels, name, self.settings["gate"])
            spoken = bls("tts", {"text": np.array([[d.reply_text.encode()]], dtype=object)}, ["audio", "sample_rate"])
            rows.append({"transcript": np.array([transcript.encode()], dtype=object), "phrase_ok": np.array([d.phrase_ok]),
                         "mask": np.array([d.mask.encode()], dtype=object), "admit": np.array([d.admit]),
                         "reply_text": np.array([d.reply_text.encode()], dtype=object),
                         "reply_audio": spoken["audio"].reshape(-1).astype(np.float32),
                         "sample_rate": spoken["sample_rate"].reshape(-1)[:1].astype(np.int32)})
        return _stack(rows)
