"""launcher=torchrun without training: settings -> torchrun flags, who coordinates a run dir, which
stages go under torchrun, how a worker fits the trainer to the world it was given."""

from __future__ import annotations

import os
import time

import pytest
from omegaconf import OmegaConf

from hackathon.core import elastic
from hackathon.core.config import load_config
from hackathon.core.elastic_worker import checkpointed_since, fit_to_world
from hackathon.core.errors import HackathonError
from hackathon.core.run_context import RunContext, Stage


def test_settings_become_torchrun_flags(tmp_path):
    cfg = load_config("asr", None, ["launcher=torchrun", "elastic.nnodes=1:2", "elastic.max_restarts=5",
                                    "elastic.rdzv_endpoint=ws1:29400", "trainer.devices=2"])
    s = elastic.settings(cfg)
    assert s.nnodes == "1:2" and s.max_nodes == 2  # not YAML's sexagesimal 62
    stage = Stage("train", lambda ctx: None, "train", trainer="trainer", config_keys=("seed", "trainer"))
    assert elastic.nproc_per_node(stage, cfg, s) == 2
    argv = elastic.torchrun_argv("asr", tmp_path, "train", 2, s, "ws1:29400", tmp_path / "logs")
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    for flag in ("--nnodes=1:2", "--nproc-per-node=2", "--rdzv-backend=c10d", "--rdzv-endpoint=ws1:29400",
                 "--max-restarts=5", f"--rdzv-id={elastic.rendezvous_id(tmp_path, s)}"):
        assert flag in argv
    assert not any(a.startswith("--node-rank") for a in argv)  # elastic: the rendezvous assigns it
    assert argv[-5:] == ["--module", "hackathon.core.elastic_worker", "asr", str(tmp_path), "train"]
    # the same run dir gives the same rendezvous id on every node
    assert elastic.rendezvous_id(tmp_path, s) == elastic.rendezvous_id(tmp_path, elastic.settings(cfg))


@pytest.mark.parametrize("overrides, message", [
    (["elastic.nnodes=3:2"], "not N or MIN:MAX"),
    (["elastic.nnodes=1:4"], "needs elastic.rdzv_endpoint"),
    (["elastic.nproc_per_node=two"], "not a number"),
    (["launcher=slurm"], "not known"),
])
def test_bad_elastic_settings_are_refused_with_a_fix(overrides, message):
    cfg = load_config("detect", None, ["launcher=torchrun", *overrides])
    with pytest.raises(HackathonError, match=message) as err:
        elastic.launcher(cfg)
        elastic.settings(cfg)
    assert err.value.fix


def test_first_process_coordinates_the_run_dir_the_next_joins(tmp_path):
    first = elastic.claim_role("asr", ["launcher=torchrun"], None, tmp_path / "run", False)
    second = elastic.claim_role("asr", ["launcher=torchrun"], None, tmp_path / "run", False)
    assert first.coordinator and not second.coordinator and first.run_dir == second.run_dir
    first.release()  # (kill -9 releases it too: it is an flock)
    third = elastic.claim_role("asr", ["launcher=torchrun"], None, tmp_path / "run", False)
    assert third.coordinator
    third.release()
    assert elastic.claim_role("asr", [], None, tmp_path / "run", False) is None  # launcher=local


def test_only_training_stages_go_under_torchrun(tmp_path):
    from tasks.asr.pipeline import build_stages as asr_stages
    from tasks.detect.pipeline import build_stages as detect_stages
    from tasks.tts.pipeline import build_stages as tts_stages

    for task, build, expected in (("asr", asr_stages, {"train"}), ("tts", tts_stages, {"fastpitch", "hifigan"}),
                                  ("detect", detect_stages, {"train"})):
        cfg = load_config(task, None, ["launcher=torchrun"])
        stages = build(cfg)
        ctx = RunContext(task=task, run_dir=tmp_path, cfg=cfg, meta={"stages": {}})
        wrapped = elastic.under_torchrun(ctx, stages)
        assert [s.name for s in wrapped] == [s.name for s in stages]
        assert {w.name for w, s in zip(wrapped, stages) if w.fn is not s.fn} == expected, task


def test_worker_fits_the_trainer_to_the_world_it_was_given():
    cfg = OmegaConf.create({"trainer": {"accelerator": "auto", "devices": 1, "num_nodes": 1},
                            "hifigan": {"trainer": {"devices": 1, "num_nodes": 1}}})
    fit_to_world(cfg, Stage("hifigan", lambda c: None, "train", trainer="hifigan.trainer", config_keys=("trainer",)),
                 6, 2, 1)
    assert (cfg.hifigan.trainer.accelerator, cfg.hifigan.trainer.devices, cfg.hifigan.trainer.num_nodes) == ("cpu", 2, 3)
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (1, 1)  # only the section the stage declares
    with pytest.raises(HackathonError, match="not a multiple"):
        fit_to_world(cfg, Stage("t", lambda c: None, "train", trainer="trainer"), 3, 2, 0)


def test_a_restart_within_a_launch_resumes_its_own_checkpoints(tmp_path):
    launch = tmp_path / "elastic" / "train.launch.json"
    launch.parent.mkdir()
    launch.write_text('{"fresh": true}')
    ckpt_dir = tmp_path / "checkpoints" / "fit"
    ckpt_dir.mkdir(parents=True)
    old = ckpt_dir / "last.ckpt"
    old.write_bytes(b"x")
    past = time.time() - 100
    os.utime(old, (past, past))  # an earlier launch's checkpoint: a fresh start moves it aside
    (ckpt_dir / "fit.json").write_text("{}")  # rewritten by every start: not progress
    assert not checkpointed_since(tmp_path, launch)
    (ckpt_dir / "last.ckpt").write_bytes(b"y")
    future = time.time() + 5
    os.utime(ckpt_dir / "last.ckpt", (future, future))
    assert checkpointed_since(tmp_path, launch)


def test_gpu_locks_cover_every_local_worker_under_torchrun():
    from hackathon.core import gpus

    cfg = load_config("asr", None, ["launcher=torchrun", "elastic.nproc_per_node=4"])
    assert gpus.select_gpus("auto", max(d for _, d in gpus.requested_devices(cfg, []) if isinstance(d, int)), list(range(8))) == [0, 1, 2, 3]
    assert ("auto", 4) not in gpus.requested_devices(load_config("asr", None, ["elastic.nproc_per_node=4"]), [])


def test_agents_rebuild_the_bootstrap_store_every_round_so_late_nodes_can_join(monkeypatch):
    """torch shares the rendezvous TCPStore and publishes its address only at an agent's first rendezvous:
    a node that joins a running job would wait for it forever. The agents get the opt-out (unless the user
    set it)."""
    from hackathon.core.elastic import _agent_env

    monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)
    assert _agent_env()["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "0")
    assert _agent_env()["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "0"


def test_joiner_starts_one_agent_per_stage_attempt_and_leaves_when_the_run_ends(tmp_path, monkeypatch):
    """join_run follows the coordinator's meta.json: an agent for each training stage attempt whose launch file
    is written (a stage restarted later is joined again), none for a stage it already joined, and it leaves
    once the run has ended."""
    import json
    import types

    from hackathon.core.atomic import atomic_write_json
    from hackathon.core.elastic import Role, join_run, launch_file

    rd = tmp_path / "run"
    (rd / "elastic").mkdir(parents=True)
    meta = {"status": "running", "stages": {"prepare": {"status": "done"},
                                            "train": {"status": "running", "attempts": 1,
                                                      "elastic": {"rdzv_endpoint": None}}}}
    atomic_write_json(rd / "meta.json", meta)
    atomic_write_json(launch_file(rd, "train"), {"fresh": True})
    agents = []

    def fake_agent(task, run_dir, stage, cfg, endpoint, echo):
        agents.append((stage.name, json.loads((run_dir / "meta.json").read_text())["stages"]["train"]["attempts"]))
        if len(agents) == 1:  # the coordinator restarts the stage: a second attempt to join
            meta["stages"]["train"]["attempts"] = 2
        else:  # the run ends (after the joiner started)
            meta.update(status="done", finished="9999-12-31T23:59:59")
        atomic_write_json(rd / "meta.json", meta)
        return 0

    cfg = OmegaConf.create({"trainer": {"devices": 1}})
    pipeline = types.SimpleNamespace(build_stages=lambda c: [Stage("prepare", lambda ctx: None, "data", ["data"]),
                                                             Stage("train", lambda ctx: None, "train", ["trainer"],
                                                                   trainer="trainer")])
    monkeypatch.setattr(elastic, "run_agent", fake_agent)
    monkeypatch.setattr("hackathon.core.config.load_config", lambda *a, **k: cfg)
    join_run("asr", Role(run_dir=rd, coordinator=False), echo=lambda s: None, pipeline=lambda task: pipeline,
             timeout=30)
    assert agents == [("train", 1), ("train", 2)]
