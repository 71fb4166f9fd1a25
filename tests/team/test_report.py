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


class CellText(__import__("html.parser").parser.HTMLParser):
    """The text of every table cell (td/th) of a page, nested tables included; and the order of ids."""

    def __init__(self):
        super().__init__()
        self.cells, self.ids, self._open = [], [], []

    def handle_starttag(self, tag, attrs):
        if dict(attrs).get("id"):
            self.ids.append(dict(attrs)["id"])
        if tag in ("td", "th"):
            self._open.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._open:
            text = self._open.pop()
            self.cells.append(text)
            if self._open:
                self._open[-1] += text

    def handle_data(self, data):
        if self._open:
            self._open[-1] += data


def cells_and_ids(page: str) -> tuple[list[str], list[str]]:
    parser = CellText()
    parser.feed(page)
    return parser.cells, parser.ids


def test_headline_first_then_pictures_then_provenance_and_stages_without_json_in_cells(tmp_path):
    """What a task declares (report_assets.json `headline`, a table marked headline) leads the page; dicts in
    metrics.json and in the stages' recorded values are sub-tables; bookkeeping columns are not plotted."""
    from hackathon.core.report import add_report_assets

    (tmp_path / "meta.json").write_text(json.dumps({"task": "detect", "status": "done", "user": "ana", "stages": {
        "train": {"status": "done", "seconds": 12.5, "attempts": 1, "model": "ssd",
                  "resumed_from": {"epoch": 2, "global_step": 40}, "fit_attempts": [{"batch_size": 8, "seconds": 3.0}]}},
        "versions": {"torch": "2.4"}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"map50": 0.61, "map": 0.33, "num_images": 24,
                                                       "ap50_per_class": {"with_mask": 0.7, "without_mask": None}}))
    log_dir = tmp_path / "logs" / "torch_train"
    log_dir.mkdir(parents=True)
    (log_dir / "metrics.csv").write_text("epoch,step,train_loss,lr,val_map50,seconds,steps,train_step_timing\n"
                                         "0,5,2.0,0.01,0.2,10.5,5,0.1\n1,10,1.0,0.01,0.4,21.0,10,0.1\n")
    Image.new("RGB", (32, 24), (0, 90, 200)).save(tmp_path / "pr.png")
    add_report_assets(tmp_path, images=[{"path": "pr.png", "caption": "PR curves"}],
                      tables=[{"title": "AP per class", "headline": True, "rows": [{"class": "with_mask", "ap": 0.7}]},
                              {"title": "Samples", "rows": [{"image": "a.png", "boxes": [{"x": 1}, {"x": 2}]}]}],
                      headline=[{"key": "map50", "label": "mAP@0.5", "better": "higher"}, "map", "ap50_per_class",
                                {"key": "recall", "label": "not measured"}])
    page = write_run_report(tmp_path).read_text()
    cells, ids = cells_and_ids(page)

    assert ids[:2] == ["headline", "pictures"] and ids.index("provenance") < ids.index("stages")
    headline = page[page.index('id=headline'):page.index('id=pictures')]
    assert "mAP@0.5" in headline and "0.61" in headline and "map50, higher is better" in headline
    assert "AP per class" in headline and "with_mask" in headline  # the marked table and the dict metric
    assert "not measured" in headline and "\u2014" in headline  # a declared key missing from metrics.json
    assert page.index("PR curves") < page.index("Samples") < page.index("All metrics") < page.index("Provenance")
    assert cells and not [c for c in cells if "{" in c or "}" in c], [c for c in cells if "{" in c]
    assert "resumed_from" in cells and "global_step" in cells and "40" in cells  # recorded: a sub-table
    from hackathon.core.report import collect_training_logs

    series = collect_training_logs(tmp_path)[0]["logs/torch_train/metrics.csv"]
    assert sorted(series) == ["train_loss", "val_map50"]  # epoch, step(s), lr, seconds, timing: bookkeeping
