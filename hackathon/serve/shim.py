"""Per-request input checks inside Triton, so bad input is a client error and never fails a batch.

pytriton 0.7 turns every exception of an inference callable into TritonModelException for the WHOLE batch
(HTTP 500 / gRPC INTERNAL, measured): with dynamic batching one bad upload would fail the good requests
batched with it. pytriton writes a Python-backend model.py (its proxy) into the model repository for each
bound model; we append a subclass of its TritonPythonModel whose execute() first checks every request with
hackathon/serve/inputs.py (inside the stub process, before batching reaches our callable), answers the bad
ones with TritonError(INVALID_ARG) — HTTP 400 / gRPC INVALID_ARGUMENT, naming the input — and hands only
the good ones on to pytriton's execute().

`install()` wraps pytriton.models.model.Model.generate_model (the one place that writes model.py) in THIS
process only; nothing in site-packages is modified.
"""

from __future__ import annotations

import json
from pathlib import Path

from hackathon.core.paths import REPO_ROOT

MARKER = "# --- hackathon.serve input checks"

SHIM_TEMPLATE = '''
{marker} (appended by hackathon/serve/shim.py; see its docstring)
import sys as _hk_sys
if {repo_root!r} not in _hk_sys.path:
    _hk_sys.path.insert(0, {repo_root!r})
from hackathon.serve.inputs import BadInput as _HkBadInput, decode_request as _hk_decode_request

_HK_MODEL = {model!r}
_HK_LIMITS = {limits}


class TritonPythonModel(TritonPythonModel):  # noqa: F811 - subclass of pytriton's proxy above
    def execute(self, requests):
        errors = {{}}
        for index, request in enumerate(requests):
            try:
                inputs = {{tensor.name(): tensor.as_numpy() for tensor in request.inputs()}}
                _hk_decode_request(_HK_MODEL, inputs, _HK_LIMITS)
            except _HkBadInput as exc:
                errors[index] = str(exc)
        if not errors:
            return super().execute(requests)
        good = [r for i, r in enumerate(requests) if i not in errors]
        good_responses = iter(super().execute(good) if good else [])
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[i], pb_utils.TritonError.INVALID_ARG))
                if i in errors else next(good_responses) for i in range(len(requests))]
'''


def shim_source(model: str, limits: dict) -> str:
    return SHIM_TEMPLATE.format(marker=MARKER, repo_root=str(REPO_ROOT), model=model,
                                limits=json.dumps(limits, sort_keys=True))


def install(limits: dict, models: tuple[str, ...] = ("asr", "tts", "detect", "gate")) -> None:
    """Make pytriton append the input checks to the model.py it hands Triton for each of `models`.

    pytriton ships model.py either as files in a local model store (Model.generate_model) or as bytes in
    the load request (Model.get_proxy_model_files, what Triton.run() uses); both are wrapped."""
    from pytriton.models import model as pytriton_model

    cls = pytriton_model.Model
    generate = getattr(cls.generate_model, "_hackathon_original", cls.generate_model)
    files = getattr(cls.get_proxy_model_files, "_hackathon_original", cls.get_proxy_model_files)
    limits = dict(limits)

    def with_shim(model_name: str, text: str, where: str) -> str:
        if "class TritonPythonModel" not in text:
            raise RuntimeError(f"pytriton's proxy {where} has no TritonPythonModel class: this pytriton version "
                               f"is not the 0.7 the input checks were written for")
        return text if MARKER in text else text + shim_source(model_name, limits)

    def generate_model(self, model_repository: Path) -> None:
        generate(self, model_repository)
        if self.model_name in models:
            model_py = Path(model_repository) / self.model_name / str(self.model_version) / "model.py"
            model_py.write_text(with_shim(self.model_name, model_py.read_text(encoding="utf-8"), str(model_py)),
                                encoding="utf-8")

    def get_proxy_model_files(self) -> dict:
        result = files(self)
        key = f"file:{self.model_version}/model.py"
        if self.model_name in models and key in result:
            result[key] = with_shim(self.model_name, result[key].decode("utf-8"), key).encode("utf-8")
        return result

    from pytriton.model_config import generator

    gen = generator.ModelConfigGenerator
    get_config = getattr(gen.get_config, "_hackathon_original", gen.get_config)

    def ragged_config(self) -> dict:
        """Clips and images of different sizes join one dynamic batch (Triton batches only equal shapes
        otherwise; our callables take the list of requests and pad themselves)."""
        config = get_config(self)
        if config.get("name") in models:
            for item in config.get("input", []):
                if -1 in item["dims"]:
                    item["allow_ragged_batch"] = True
        return config

    ragged_config._hackathon_original = get_config
    gen.get_config = ragged_config
    generate_model._hackathon_original = generate
    get_proxy_model_files._hackathon_original = files
    cls.generate_model = generate_model
    cls.get_proxy_model_files = get_proxy_model_files
