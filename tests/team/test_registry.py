"""Run registry: 20 processes writing at once lose no row; filters; the runner records start and end."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hackathon.core import registry
from tests.team.tiny_pipeline import use_tiny_pipeline, write_tiny_spec

REPO = Path(__file__).resolve().parents[2]
WRITERS = 20
ROWS_PER_WRITER = 15

# Each writer waits for a common start time (maximum contention), then inserts its rows and updates each
# one (queued -> done with metrics), the way runs do at start and end.
WRITER = """
import sys, time
import pytest

from hackathon.core import registry
writer, rows, start_at = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))
for i in range(rows):
    run_dir = f"/runs/asr/w{writer:02d}-{i:03d}"
    registry.upsert_run({"run_dir": run_dir, "task": "asr", "user": f"user{writer % 4}", "status": "queued",
                         "started": f"2026-01-01T00:{writer:02d}:{i:02d}"})
    registry.upsert_run({"run_dir": run_dir, "task": "asr", "status": "done", "metrics": {"cer": i / 100}})
"""


def test_twenty_concurrent_writers_lose_no_row(team_env):
    start_at = time.time() + 3.0  # all 20 interpreters are up by then
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(w), str(ROWS_PER_WRITER), str(start_at)],
                              env=team_env, cwd=REPO, stderr=subprocess.PIPE, text=True) for w in range(WRITERS)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    rows = registry.list_runs()
    assert len(rows) == WRITERS * ROWS_PER_WRITER
    assert {r["run_dir"] for r in rows} == {f"/runs/asr/w{w:02d}-{i:03d}" for w in range(WRITERS)
                                             for i in range(ROWS_PER_WRITER)}
    # the second write of each run updated its row and kept what the first one wrote
    assert all(r["status"] == "done" and r["user"] and r["started"] and "cer" in r["metrics"] for r in rows)
    conn = sqlite3.connect(team_env["HACKATHON_REGISTRY"])
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_filters_by_task_and_user(team_env):
    registry.upsert_run({"run_dir": "/r/1", "task": "asr", "user": "ana", "started": "2026-01-01T00:00:01"})
    registry.upsert_run({"run_dir": "/r/2", "task": "tts", "user": "ana", "started": "2026-01-01T00:00:02"})
    registry.upsert_run({"run_dir": "/r/3", "task": "asr", "user": "bo", "started": "2026-01-01T00:00:03"})
    assert [r["run_dir"] for r in registry.list_runs()] == ["/r/3", "/r/2", "/r/1"]  # newest first
    assert [r["run_dir"] for r in registry.list_runs(task="asr")] == ["/r/3", "/r/1"]
    assert [r["run_dir"] for r in registry.list_runs(task="asr", user="ana")] == ["/r/1"]


def test_runner_records_start_end_metrics_and_failures(team_env, tmp_path, monkeypatch):
    import hackathon.core.runner as runner

    use_tiny_pipeline(runner)
    ok_dir, bad_dir = tmp_path / "ok", tmp_path / "bad"
    runner.run_task("detect", spec=str(write_tiny_spec(tmp_path / "ok.yaml", {"map50": 0.61, "map": 0.4})),
                    run_dir=ok_dir, echo=lambda s: None)
    with pytest.raises(RuntimeError, match="on purpose"):
        runner.run_task("detect", spec=str(write_tiny_spec(tmp_path / "bad.yaml", {}, fail=True)),
                        run_dir=bad_dir, echo=lambda s: None)
    rows = {Path(r["run_dir"]).name: r for r in registry.list_runs(task="detect")}
    ok, bad = rows["ok"], rows["bad"]
    assert ok["status"] == "done" and ok["metrics"] == {"map50": 0.61, "map": 0.4}
    assert ok["data_fingerprint"] == "tiny-data-v1" and ok["config_hash"] and ok["ended"] and ok["started"]
    assert bad["status"] == "failed" and "on purpose" in bad["error"] and bad["metrics"] == {}
    assert (bad_dir / "report.html").exists()


def test_runs_command_lists_runs(team_env, hackathon_bin):
    registry.upsert_run({"run_dir": "/r/listed", "task": "tts", "user": "ana", "status": "done",
                         "metrics": {"dnsmos_ovrl": 3.1}})
    out = subprocess.run([hackathon_bin, "runs", "--task", "tts", "--json"], env=team_env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["run_dir"] for r in rows] == ["/r/listed"] and rows[0]["metrics"] == {"dnsmos_ovrl": 3.1}
    assert json.loads(subprocess.run([hackathon_bin, "runs", "--task", "asr", "--json"], env=team_env,
                                     capture_output=True, text=True, timeout=60).stdout) == []


def test_unusable_registry_is_an_error_with_a_fix(team_env, tmp_path, monkeypatch):
    from hackathon.core.errors import HackathonError

    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("this is not a database\n" * 100)
    monkeypatch.setenv("HACKATHON_REGISTRY", str(not_a_db))
    with pytest.raises(HackathonError) as err:
        registry.upsert_run({"run_dir": "/r/x", "task": "asr"})
    assert str(not_a_db) in err.value.message and err.value.fix
    assert not_a_db.read_text().startswith("this is not a database")  # nothing the user had is overwritten
