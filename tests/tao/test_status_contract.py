"""What each TAO 5 task writes to status.json (read from TAO's sources, tasks/detect/tao_runner.py
STATUS_CONTRACTS) and what the runner makes of it: ssd dataset_convert never writes SUCCESS, export writes
no STARTED and takes only --results_dir, gen_trt_engine ends with SUCCESS (5.0) or a RUNNING "finished
successfully" line (5.5), dataset_convert rewrites the file instead of appending."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hackathon.core.errors import HackathonError
from tasks.detect import tao_pipeline
from tasks.detect.tao_mounts import MountPlan
from tasks.detect.tao_runner import (STATUS_CONTRACTS, TaoJob, finished, read_statuses, status_contract,
                                     status_offset, verdict)

TASKS = ("dataset_convert", "train", "evaluate", "inference", "export", "gen_trt_engine")


def _s(*pairs) -> list[dict]:
    return [{"status": s, "message": m} for s, m in pairs]


def test_every_task_the_pipeline_runs_has_a_contract_with_its_source():
    for net in ("ssd", "yolo_v3"):
        for task in TASKS:
            c = STATUS_CONTRACTS[(net, task)]
            assert c.source and c.flag in ("-r", "--results_dir"), (net, task)
    # export's parser (common/export/app.py) has no -r: passing it would be an argparse error
    assert {status_contract(n, "export").flag for n in ("ssd", "yolo_v3")} == {"--results_dir"}
    no_mounts = tao_pipeline._Paths(MountPlan(mounts=[]))
    assert tao_pipeline._command("yolo_v3", "export", [], Path("/x"), no_mounts)[0][-2:] == ["--results_dir", "/x"]
    assert tao_pipeline._command("ssd", "train", [], Path("/x"), no_mounts)[0][-2:] == ["-r", "/x"]


@pytest.mark.parametrize("net,task,statuses,ok", [
    # ssd dataset_convert: STARTED is all it ever writes on success
    ("ssd", "dataset_convert", [("STARTED", "Starting Object Detection Dataset Convert.")], True),
    ("ssd", "dataset_convert", [], False),
    # yolo_v3 dataset_convert: the wrapper adds SUCCESS; STARTED alone means it stopped early
    ("yolo_v3", "dataset_convert", [("STARTED", "Starting Object Detection Dataset Convert.")], False),
    ("yolo_v3", "dataset_convert", [("STARTED", ""), ("SUCCESS", "Dataset convert finished successfully.")], True),
    ("ssd", "train", [("STARTED", "Starting Training Loop."), ("RUNNING", "epoch 1")], False),
    ("ssd", "train", [("STARTED", ""), ("RUNNING", ""), ("SUCCESS", "Training finished successfully.")], True),
    ("yolo_v3", "evaluate", [("STARTED", ""), ("SUCCESS", "Evaluation finished successfully.")] * 1, True),
    ("ssd", "export", [("RUNNING", "Building exporter object."), ("RUNNING", "Exporting the model.")], False),
    ("ssd", "export", [("RUNNING", "Building exporter object."), ("SUCCESS", "Export finished successfully.")], True),
    ("yolo_v3", "gen_trt_engine", [("STARTED", "Starting yolo_v3 gen_trt_engine."), ("SUCCESS", "")], True),
    ("yolo_v3", "gen_trt_engine", [("STARTED", ""), ("RUNNING", "Gen_trt_engine finished successfully.")], True),
    ("yolo_v3", "gen_trt_engine", [("STARTED", "Starting yolo_v3 gen_trt_engine.")], False),
])
def test_finished_follows_each_task(net, task, statuses, ok):
    assert finished(status_contract(net, task), _s(*statuses)) is ok


def _job(tmp_path: Path, net: str, task: str, expected=()) -> TaoJob:
    return TaoJob(name=f"{net} {task}", image="x", command=[net, task], plan=None, checks=[],
                  log_file=tmp_path / "log.txt", status_dir=tmp_path / "results", expected=list(expected),
                  status=status_contract(net, task))


def test_verdict_accepts_ssd_convert_without_success_but_still_needs_its_shards(tmp_path):
    statuses = _s(("STARTED", "Starting Object Detection Dataset Convert."))
    shards = tmp_path / "tfrecords" / "train-*"
    with pytest.raises(HackathonError, match="did not write"):
        verdict(_job(tmp_path, "ssd", "dataset_convert", [shards]), 0, statuses, "")
    shards.parent.mkdir()
    (shards.parent / "train-fold-000-of-002-shard-00000-of-00010").write_text("x")
    verdict(_job(tmp_path, "ssd", "dataset_convert", [shards]), 0, statuses, "")
    with pytest.raises(HackathonError) as exc:
        verdict(_job(tmp_path, "yolo_v3", "dataset_convert", [shards]), 0, statuses, "")
    assert "wrote no SUCCESS" in exc.value.message and "yolo_v3/scripts/dataset_convert.py" in exc.value.message
    with pytest.raises(HackathonError, match="status FAILURE"):
        verdict(_job(tmp_path, "ssd", "dataset_convert", [shards]), 0,
                statuses + _s(("FAILURE", "Dataset convert was interrupted")), "")


def test_truncating_tasks_are_read_from_the_start(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    old = json.dumps({"status": "SUCCESS", "message": "an earlier, longer line " + "x" * 200}) + "\n"
    (results / "status.json").write_text(old)
    append = status_offset(results, status_contract("ssd", "train"))
    rewrite = status_offset(results, status_contract("ssd", "dataset_convert"))
    assert append == len(old) and rewrite == 0
    # the task rewrote the file with append=False: a shorter or a longer new file is read whole
    new = json.dumps({"status": "STARTED", "message": "Starting Object Detection Dataset Convert."}) + "\n"
    (results / "status.json").write_text(new * 3)
    assert [s["status"] for s in read_statuses(results, rewrite)] == ["STARTED"] * 3


def test_evaluate_map_comes_from_the_status_kpi_first():
    statuses = [{"status": "STARTED"}, {"status": "SUCCESS", "kpi": {"mAP": 0.8123}}]
    assert tao_pipeline.status_map(statuses) == 0.8123
    assert tao_pipeline.status_map([{"status": "SUCCESS"}]) is None
