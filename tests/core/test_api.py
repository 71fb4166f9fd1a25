"""The Python API: hackathon.run(...) runs a pipeline like `hackathon run` and returns a Run object."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hackathon
import hackathon.core.runner as runner
from hackathon.core.errors import HackathonError
from tests.conftest import REPO
from tests.team.tiny_pipeline import use_tiny_pipeline, write_tiny_spec


@pytest.fixture(autouse=True)
def tiny(monkeypatch):
    monkeypatch.setattr(runner, "pipeline_module", runner.pipeline_module)  # restored after the test
    use_tiny_pipeline(runner)


def test_run_returns_the_run(tmp_path):
    spec = write_tiny_spec(tmp_path / "tiny.yaml", {"cer": 0.25})
    run = hackathon.run("asr", overrides={"result.cer": 0.125, "work.fail": False}, spec=str(spec),
                        run_dir=tmp_path / "run")
    assert isinstance(run, hackathon.Run) and run.task == "asr" and run.status == "done"
    assert run.run_dir == (tmp_path / "run").resolve() and run.metrics == {"cer": 0.125}
    assert run.report == run.run_dir / "report.html" and run.report.is_file()
    again = hackathon.run("asr", ["result.cer=0.125"], spec=str(spec), run_dir=tmp_path / "run")
    assert again.metrics == {"cer": 0.125} and (again.run_dir / "stages" / "evaluate.done").is_file()
    with pytest.raises(HackathonError, match="Unknown config key"):
        hackathon.run("asr", {"result.cerr": 1}, spec=str(spec), run_dir=tmp_path / "run2")
    with pytest.raises(HackathonError, match="one string"):
        hackathon.run("asr", "result.cer=1", spec=str(spec))
    with pytest.raises(HackathonError, match="Unknown task"):
        hackathon.run("all")


def test_a_failing_stage_raises_and_the_run_says_failed(tmp_path):
    spec = write_tiny_spec(tmp_path / "tiny.yaml", {"cer": 0.25}, fail=True)
    with pytest.raises(RuntimeError, match="failed on purpose"):
        hackathon.run("asr", spec=str(spec), run_dir=tmp_path / "run")
    assert hackathon.Run.load(tmp_path / "run").status == "failed"


def test_import_hackathon_stays_cheap():
    code = ("import sys, hackathon, hackathon.core.text, hackathon.core.paths; hackathon.run; "
            "print(sorted(m for m in ('torch', 'lightning', 'nemo', 'omegaconf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
