"""The Python-backend models of the deployed repository (`hackathon deploy triton-repo`): asr, tts, detect
and gate, run by Triton's Python backend inside the NGC container (model.py imports this class).

asr/tts/detect: the project's predictor (tasks/<task>/onnx_infer.py `load(run_dir)`) over the repository's
run folder, with every ONNX Runtime session it would open replaced by a BLS call to the network model that
serves that ONNX file on the GPU (hackathon_model.json maps file -> model). So the pre/post-processing is
the code that `hackathon serve` and the export checks run, and only the network execution moves.
gate: BLS to asr and detect at once (async BLS, `await request.async_exec()` in a coroutine execute), then to
tts for the reply texts not in its reply cache; the decision is hackathon/serve/gate.py.

Every request is checked with hackathon/serve/inputs.py first; a bad one gets TritonError(INVALID_ARG)
(HTTP 400 / gRPC INVALID_ARGUMENT) and the others in the batch go on.
"""

from __future__ import annotations

import asyncio
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


def _request(model: str, inputs: dict, outputs: list[str]):
    return pb_utils.InferenceRequest(model_name=model, requested_output_names=list(outputs),
                                     inputs=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()])


def _result(model: str, response, outputs: list[str]) -> dict:
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return {name: _to_numpy(pb_utils.get_output_tensor_by_name(response, name)) for name in outputs}


def bls(model: str, inputs: dict, outputs: list[str]) -> dict:
    """One blocking BLS call; a failed call raises with Triton's message."""
    return _result(model, _request(model, inputs, outputs).exec(), outputs)


async def bls_async(model: str, inputs: dict, outputs: list[str]) -> dict:
    """One BLS call that other calls overlap (request.async_exec, awaited inside the coroutine execute)."""
    return _result(model, await _request(model, inputs, outputs).async_exec(), outputs)


class _Arg:
    def __init__(self, name: str):
        self.name = name


class BlsSession:
    """The subset of onnxruntime.InferenceSession the predictors use, answered by a Triton model."""

    def __init__(self, spec: dict):
        self.model, self._inputs, self._outputs = spec["model"], spec["inputs"], spec["outputs"]
        self._per_row = set(spec.get("per_row", ()))  # [B] tensors, [B, 1] on Triton's side (reshape: [])

    def get_inputs(self):
        return [_Arg(n) for n in self._inputs]

    def get_outputs(self):
        return [_Arg(n) for n in self._outputs]

    def run(self, output_names, feed: dict):
        names = list(output_names or self._outputs)
        result = bls(self.model, {k: v.reshape(-1, 1) if k in self._per_row else v for k, v in feed.items()}, names)
        return [result[n].reshape(-1) if n in self._per_row else result[n] for n in names]


class TritonPythonModel:
    def initialize(self, args):
        folder = Path(args["model_repository"]) / args["model_version"]
        self.settings = json.loads((folder / "hackathon_model.json").read_text(encoding="utf-8"))
        self.kind = self.settings["model"]
        self.limits = self.settings["limits"]
        if self.kind == "gate":
            from hackathon.serve.gate import ReplyCache

            self.replies = ReplyCache(self.settings["gate"]["reply_cache"])
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
        """One call per dynamic batch: every request checked (a bad one gets its own INVALID_ARG), then the good
        ones' rows go through the predictor at once (asr: one padded network call). The gate returns a
        coroutine, which the stub runs to completion: its BLS calls are awaited together."""
        from hackathon.serve.inputs import BadInput, decode_request

        good, errors = [], {}
        for index, request in enumerate(requests):
            inputs = {t.name(): t.as_numpy() for t in request.inputs()}
            try:
                good.append((index, inputs, decode_request(self.kind, inputs, self.limits)))
            except BadInput as exc:
                errors[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        if self.kind == "gate":
            return self._gate_batch(len(requests), good, errors)
        from hackathon.serve.server import run_decoded

        try:
            outputs = run_decoded([decoded for _, _, decoded in good], self.run_rows)
        except Exception as exc:  # noqa: BLE001 - a server-side failure of this batch, answered per request
            outputs = exc
        return self._responses(len(requests), good, errors, outputs)

    def _responses(self, count: int, good: list, errors: dict, outputs) -> list:
        for position, (index, _, _) in enumerate(good):
            errors[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.kind}: {outputs}")) \
                if isinstance(outputs, Exception) else pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in outputs[position].items()])
        return [errors[i] for i in range(count)]

    async def _gate_batch(self, count: int, good: list, errors: dict) -> list:
        from hackathon.serve.server import _stack

        rows = [(inputs["audio"][r:r + 1], inputs["image"][r:r + 1], decoded["name"][r])
                for _, inputs, decoded in good for r in range(len(decoded["name"]))]
        try:
            answers = await self._gate(rows)
            outputs, start = [], 0
            for _, _, decoded in good:
                outputs.append(_stack(answers[start:start + len(decoded["name"])]))
                start += len(decoded["name"])
        except Exception as exc:  # noqa: BLE001 - a server-side failure of this batch, answered per request
            outputs = exc
        return self._responses(count, good, errors, outputs)

    async def _calls(self, calls: list[tuple]) -> list[dict]:
        """BLS calls (model, inputs, outputs): all in flight at once (async BLS), or one after another."""
        if self.settings["concurrent_bls"]:
            return list(await asyncio.gather(*(bls_async(*call) for call in calls)))
        return [bls(*call) for call in calls]

    async def _gate(self, rows: list[tuple]) -> list[dict]:
        from hackathon.serve.gate import decide

        heard = await self._calls([("asr", {"audio": audio}, ["text"]) for audio, _, _ in rows]
                                  + [("detect", {"image": image}, ["scores", "labels"]) for _, image, _ in rows])
        decisions = []
        for (_, _, name), said, found in zip(rows, heard[:len(rows)], heard[len(rows):]):
            labels = [v.decode() for v in found["labels"].reshape(-1) if v]
            transcript = said["text"].reshape(-1)[0].decode()
            decisions.append(decide(transcript, found["scores"].reshape(-1)[:len(labels)], labels, name,
                                    self.settings["gate"]))
        # each reply text once, and only those not spoken before (the cache is per tts model of this repository)
        missing = list(dict.fromkeys(d.reply_text for d in decisions if self.replies.get((d.reply_text, "tts")) is None))
        spoken = await self._calls([("tts", {"text": np.array([[t.encode()]], dtype=object)}, ["audio", "sample_rate"])
                                    for t in missing])
        fresh = {text: self.replies.put((text, "tts"), (result["audio"].reshape(-1).astype(np.float32),
                                                        result["sample_rate"].reshape(-1)[:1].astype(np.int32)))
                 for text, result in zip(missing, spoken)}
        out = []
        for d in decisions:
            audio, rate = fresh.get(d.reply_text) or self.replies.get((d.reply_text, "tts"))
            out.append({"transcript": np.array([d.transcript.encode()], dtype=object),
                        "phrase_ok": np.array([d.phrase_ok]), "mask": np.array([d.mask.encode()], dtype=object),
                        "admit": np.array([d.admit]), "reply_text": np.array([d.reply_text.encode()], dtype=object),
                        "reply_audio": audio, "sample_rate": rate})
        return out
