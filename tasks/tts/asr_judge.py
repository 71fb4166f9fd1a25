"""The ASR judge: the ASR pipeline (tasks/asr) trained on this TTS run's own training recordings.

It knows the voice and the fixed sentence, so it can tell whether the synthesis says the right words;
names unseen in training are its weak spot (the evaluation reports them apart). The judge is an ordinary
ASR run directory, keyed by the content of the recordings + its spec, under <runs>/tts/.asr_judge/<key>,
so runs on the same data share one judge and an interrupted judge training resumes.

Runs as its own process: `python -m tasks.tts.asr_judge JUDGE_DIR MANIFEST [key=value ...]`.
Only the ASR stages that make the model run (prepare, model, train), through the runner's stage loop
(not run_task: the parent TTS run already holds the GPU lock, a nested run_task would wait for it).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from hackathon.core.errors import HackathonError

JUDGE_STAGES = ("prepare", "model", "train")
JUDGE_MODEL = "model/trained.nemo"


def judge_key(manifest: Path, spec: str, overrides: list[str]) -> str:
    from data_tools.manifest import read_manifest
    from hackathon.core.fingerprint import file_sha256

    h = hashlib.sha256(json.dumps([spec, sorted(overrides)]).encode())
    for entry in read_manifest(manifest):
        h.update(file_sha256(entry.audio_filepath).encode())
        h.update(entry.text.encode())
    return h.hexdigest()[:16]


def judge_manifest(ctx) -> Path:
    """Whole training sentences (phrase clips add little for the judge and double its training time)."""
    from hackathon.core.atomic import atomic_write_jsonl

    from data_tools.manifest import read_manifest

    rows = [e.to_dict() for e in read_manifest(ctx.path("g2p", "train.json"))]
    whole = [{k: r[k] for k in ("audio_filepath", "duration", "text")} for r in rows if r.get("phrase_index", -1) == -1]
    return atomic_write_jsonl(ctx.path("eval", "judge_train_manifest.json"), whole or rows)


def ensure_asr_judge(ctx) -> Path:
    """Path of the judge's .nemo, training it (in a subprocess) when this data has none yet."""
    from hackathon.core.paths import runs_root

    manifest = judge_manifest(ctx)
    spec = str(ctx.cfg.evaluate.asr_spec)
    overrides = [str(o) for o in ctx.cfg.evaluate.asr_overrides]
    judge_dir = runs_root() / "tts" / ".asr_judge" / judge_key(manifest, spec, overrides)
    model = judge_dir / JUDGE_MODEL
    if not model.is_file() or not (judge_dir / "stages" / "train.done").exists():
        log_path = ctx.path("logs", "asr_judge.log")
        ctx.log.info("training the ASR judge in %s (log: %s)", judge_dir, log_path)
        with open(log_path, "a", encoding="utf-8") as log_file:
            proc = subprocess.run([sys.executable, "-m", "tasks.tts.asr_judge", str(judge_dir), str(manifest), spec,
                                   *overrides], stdout=log_file, stderr=subprocess.STDOUT)
        if proc.returncode != 0 or not model.is_file():
            raise HackathonError(f"The ASR judge could not be trained (exit {proc.returncode}); see {log_path}.",
                                 fix="Fix the error shown there, or score without it: evaluate.asr_judge=false.")
    ctx.record(asr_judge=str(judge_dir))
    return model


def train_judge(judge_dir: Path, manifest: Path, spec: str, overrides: list[str]) -> None:
    from hackathon.core.runner import execute_stages, pipeline_module, prepare_run

    ctx = prepare_run("asr", [f"data.source={manifest}", *overrides], spec=spec, run_dir=judge_dir)
    stages = [s for s in pipeline_module("asr").build_stages(ctx.cfg) if s.name in JUDGE_STAGES]
    execute_stages(ctx, stages)


if __name__ == "__main__":
    train_judge(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:])
