"""report.html: one self-contained page with config, stages, loss curves (Lightning CSV and TensorBoard
logs), metrics and the task's images, audio and tables — every resource embedded as a data: URI."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import soundfile as sf
from PIL import Image

import hackathon.core.runner as runner
from hackathon.core.report import collect_training_logs, write_run_report
from tests.team.tiny_pipeline import use_tiny_pipeline, write_tiny_spec


def write_lightning_logs(run_dir):
    """Real Lightning CSVLogger and TensorBoard writers, as a training stage leaves them (two versions:
    the run was resumed once)."""
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.tensorboard import SummaryWriter

    for version, steps in ((0, range(0, 5)), (1, range(5, 10))):
        logger = CSVLogger(save_dir=str(run_dir / "logs"), name="csv", version=version)
        for step in steps:
            logger.log_metrics({"train_loss": 2.0 / (step + 1), "epoch": step // 5}, step=step)
            if step % 5 == 4:
                logger.log_metrics({"val_loss": 1.5 / (step + 1), "val_wer": 0.9 - step * 0.05}, step=step)
        logger.save()
    writer = SummaryWriter(log_dir=str(run_dir / "logs" / "tb"))
    for step in range(6):
        writer.add_scalar("train_loss", 1.0 / (step + 1), step)
        writer.add_scalar("learning_rate", 0.001, step)
    writer.close()


def write_assets(run_dir):
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), (200, 30, 30)).save(run_dir / "plots" / "pr_curve.png")
    t = np.arange(1600) / 16000
    sf.write(run_dir / "worst_0.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    assets = {"images": [{"path": "plots/pr_curve.png", "caption": "PR curve <mask>"},
                         {"path": "plots/gone.png", "caption": "deleted picture"}],
              "audio": [{"path": "worst_0.wav", "caption": "worst utterance", "text": "ni hao & goodbye"}],
              "tables": [{"title": "Worst utterances", "rows": [{"ref": "ni hao", "hyp": "ni", "cer": 0.5}]}]}
    (run_dir / "report_assets.json").write_text(json.dumps(assets))


def test_report_embeds_everything(team_env, tmp_path):
    use_tiny_pipeline(runner)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_lightning_logs(run_dir)
    write_assets(run_dir)
    runner.run_task("asr", spec=str(write_tiny_spec(tmp_path / "s.yaml", {"cer": 0.25, "wer": 0.5})),
                    run_dir=run_dir, echo=lambda s: None)
    page = (run_dir / "report.html").read_text()  # written by the runner at the end of the run

    # self-contained: every src is a data: URI, no link to a server or a local file
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:") for s in srcs)
    assert "http://" not in page and "https://" not in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 3  # CSV curves, TensorBoard curves, the task's PR curve
    for data in pngs:
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"
    wav = re.findall(r'<audio controls[^>]*src="data:audio/wav;base64,([^"]+)"', page)
    assert len(wav) == 1 and sf.read(io.BytesIO(base64.b64decode(wav[0])))[0].shape == (1600,)

    assert "PR curve &lt;mask&gt;" in page and "ni hao &amp; goodbye" in page  # escaped, not raw HTML
    assert "missing file plots/gone.png" in page
    assert "Worst utterances" in page and "<td>0.5</td>" in page
    assert "<td>cer</td><td>0.25</td>" in page
    for stage in ("prepare", "train", "evaluate"):
        assert f"<td>{stage}</td><td>done</td>" in page
    assert "accelerator: cpu" in page  # config.yaml
    umask = os.umask(0)
    os.umask(umask)
    assert (run_dir / "report.html").stat().st_mode & 0o777 == 0o666 & ~umask  # teammates can open it


def test_csv_versions_of_one_logger_are_merged_and_tensorboard_is_read(tmp_path):
    write_lightning_logs(tmp_path)
    sources, notes = collect_training_logs(tmp_path)
    assert notes == []
    csv_series = sources["logs/csv/metrics.csv"]
    assert [s for s, _ in csv_series["train_loss"]] == list(range(10))  # version_0 + version_1, by step
    assert len(csv_series["val_loss"]) == 2 and "epoch" not in csv_series
    tb = sources["logs/tb/events"]
    assert [round(v, 3) for _, v in tb["train_loss"]] == [round(1 / (s + 1), 3) for s in range(6)]


def test_failed_run_report_shows_error_and_log_tail(team_env, tmp_path):
    use_tiny_pipeline(runner)
    run_dir = tmp_path / "failed"
    try:
        runner.run_task("tts", spec=str(write_tiny_spec(tmp_path / "s.yaml", {}, fail=True)), run_dir=run_dir,
                        echo=lambda s: None)
    except RuntimeError:
        pass
    page = (run_dir / "report.html").read_text()
    assert "status-failed" in page and "tiny training failed on purpose" in page
    assert "Last" in page and "logs/run.log" in page


def test_broken_assets_file_is_reported_not_fatal(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"task": "detect", "status": "done", "stages": {}}))
    (tmp_path / "report_assets.json").write_text("{not json")
    page = write_run_report(tmp_path).read_text()
    assert "could not read report_assets.json" in page and "no metrics.json yet" in page
