"""Multi-GPU: extra DDP processes that re-enter `hackathon run` only join rank 0's training stages; the
ASR demo model trains with Lightning DDP on 2 CPU processes (gloo) through the real runner."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import hackathon.core.runner as runner
from hackathon.core import ddp
from hackathon.core.runner import Stage

REPO = Path(__file__).resolve().parents[2]


def test_a_stage_says_what_it_is_and_train_stages_name_their_settings():
    fit = Stage("fit", lambda ctx: None, "train", trainer="fastpitch.trainer", config_keys=("data", "trainer"))
    tao = Stage("tao_train", lambda ctx: None, "train", devices="gpus")
    prep = Stage("prepare", lambda ctx: None, "data", config_keys=("trainer",))  # a key named trainer decides nothing
    assert fit.on_engine and not tao.on_engine and not prep.on_engine
    with pytest.raises(ValueError, match="kind"):
        Stage("x", lambda ctx: None, "fit")
    with pytest.raises(ValueError, match="names its trainer section"):
        Stage("x", lambda ctx: None, "train")
    with pytest.raises(ValueError, match="names its trainer section"):
        Stage("x", lambda ctx: None, "data", trainer="trainer")


def test_worker_follows_rank0_through_its_training_stages_without_bookkeeping(team_env, tmp_path, monkeypatch):
    calls = []
    stages = [Stage("prepare", lambda ctx: calls.append("prepare"), "data", ("data",)),
              Stage("fit_a", lambda ctx: calls.append(("fit_a", ctx.resuming, ctx.write_metrics({"x": 1}))), "train",
                    ("a",), trainer="a.trainer"),
              Stage("evaluate", lambda ctx: calls.append("evaluate"), "evaluate", ("evaluate",)),
              Stage("fit_b", lambda ctx: (calls.append("fit_b"), ctx.record(seen=True)), "train", ("trainer",),
                    trainer="trainer")]
    monkeypatch.setattr(runner, "pipeline_module", lambda task: types.SimpleNamespace(build_stages=lambda cfg: stages))
    spec = tmp_path / "spec.yaml"
    spec.write_text("data: {n: 1}\na: {trainer: {devices: 2}}\nevaluate: {k: 1}\ntrainer: {devices: 2}\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    meta_file = run_dir / "meta.json"

    def rank0_writes(status, **stage_status):
        meta = {"status": status, "finished": time.strftime("%Y-%m-%dT%H:%M:%S") if status == "done" else None,
                "stages": {k: {"status": v, "resumed": k == "fit_a"} for k, v in stage_status.items()}}
        meta_file.write_text(json.dumps(meta))

    # an earlier, finished attempt of this run dir must not make the worker leave at once
    rank0_writes("done", prepare="done")
    (run_dir / "metrics.json").write_text("{}")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv(ddp.RUN_DIR_ENV, str(run_dir))
    worker = threading.Thread(target=runner.run_task, args=("asr",), kwargs={"spec": str(spec), "echo": lambda s: None})
    time.sleep(1.1)  # the old `finished` stamp is now older than the worker's start
    worker.start()
    time.sleep(0.6)
    assert calls == []
    rank0_writes("running", prepare="done", fit_a="running")
    deadline = time.monotonic() + 10
    while len(calls) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    rank0_writes("running", prepare="done", fit_a="done", evaluate="running")
    time.sleep(0.6)
    rank0_writes("running", prepare="done", fit_a="done", evaluate="done", fit_b="running")
    time.sleep(0.6)
    rank0_writes("done", prepare="done", fit_a="done", evaluate="done", fit_b="done")
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert calls == [("fit_a", True, {"x": 1}), "fit_b"]
    # rank 0's files are untouched by the worker
    assert json.loads((run_dir / "metrics.json").read_text()) == {}
    assert "seen" not in json.dumps(json.loads(meta_file.read_text()))


@pytest.mark.slow
def test_asr_demo_model_trains_with_ddp_on_two_cpu_processes(team_env, tmp_path):
    """Real runner, real ASR prepare/model stages, Lightning DDP (gloo) on 2 CPU processes: Lightning
    re-runs the command for rank 1, which joins rank 0's train stage via hackathon.core.ddp."""
    run_dir = tmp_path / "runs" / "asr" / "ddp"
    spec = REPO / "specs" / "asr" / "demo.yaml"
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "tests.team.ddp_pipeline", str(spec), str(run_dir)], env=team_env,
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.time() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    ranks = [json.loads((run_dir / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["backend"] == "gloo" for r in ranks)
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 3  # trainer.max_epochs=1, 3 batches
    assert all(r["params_changed"] > 0.9 * r["params"] for r in ranks), ranks  # the weights moved...
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # ...in step: gradients were all-reduced
    assert ranks[0]["train_loss"] != ranks[1]["train_loss"]  # each rank saw its own shard of the data
    assert all(r["train_loss"] is not None and r["train_loss"] == r["train_loss"] for r in ranks)  # ...finite loss
    # the worker process inherits the train stage's output: its lines are in logs/train.log, not on the console
    assert "DDP worker (LOCAL_RANK=1" in (run_dir / "logs" / "train.log").read_text(errors="replace")
    assert "DDP worker" not in out.stdout
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "done" and meta["stages"]["train"]["status"] == "done"
    assert json.loads((run_dir / "metrics.json").read_text())["ddp_world_size"] == 2
    print(f"DDP ASR run: {seconds:.1f} s")


@pytest.mark.slow
def test_hackathon_run_asr_with_two_cpu_devices_trains_with_ddp_and_finishes(team_env, tmp_path):
    """The user's command line, not a test pipeline: `trainer.accelerator=cpu trainer.devices=2` goes
    through hackathon.core.training's own Trainer (DDP over gloo), and the stages after training (evaluate,
    export) still finish in rank 0 alone once the worker has left."""
    run_dir = tmp_path / "runs" / "asr" / "cli-ddp"
    exe = Path(sys.executable).parent / "hackathon"
    out = subprocess.run([str(exe), "run", "asr", "trainer.accelerator=cpu", "trainer.devices=2",
                          "trainer.max_epochs=1", "export.onnx=false", "--run-dir", str(run_dir)],
                         env=team_env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    log = (run_dir / "logs" / "train.log").read_text(errors="replace")  # library and worker output: the stage log
    assert "Starting with 2 processes" in log and "DDP worker (LOCAL_RANK=1" in log
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["status"] == "done"
    assert all(meta["stages"][s]["status"] == "done" for s in ("train", "evaluate", "export"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_utts"] > 0 and 0.0 <= metrics["cer"] <= 1.5
