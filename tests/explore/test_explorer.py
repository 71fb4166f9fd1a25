"""`hackathon explore` in a real browser (Debian chromium, headless, Playwright): pages opened from disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hackathon.core.errors import HackathonError
from tests.explore.conftest import REPLACEMENT, SUBSTITUTED

# Screenshots for a person to look at after the run (outside the repo, beside the other test output).
SHOTS = Path(os.environ.get("HACKATHON_TEST_TMP", "/tmp/hackathon-tests")) / "explore-screenshots"


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def _open(page, index: Path) -> None:
    page.goto(index.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15000)


@pytest.fixture(scope="module")
def asr_explorer(asr_run, tmp_path_factory) -> Path:
    from hackathon.explore import build

    return build([asr_run], tmp_path_factory.mktemp("out") / "asr")


def test_speech_data_totals_oov_and_scores(asr_run, asr_explorer):
    data = json.loads((asr_explorer.parent / "data.js").read_text(encoding="utf-8")
                      .removeprefix("window.EXPLORE = ").rstrip().rstrip(";"))
    manifests = [asr_run / "data" / f"{s}_manifest.json" for s in ("train", "val", "test")]
    n = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in manifests)
    assert data["totals"]["utterances"] == len(data["rows"]) == n
    assert data["totals"]["speakers"] >= 10 and data["totals"]["with_predictions"] == data["totals"]["splits"]["test"]
    assert [c for c, _ in data["oov"]] == ["门"]
    worst = max((r for r in data["rows"] if "pred" in r), key=lambda r: r["pred"]["cer"])
    assert worst["pred"]["cer"] == pytest.approx(2 / len(worst["text"]), abs=1e-3)
    for r in data["rows"][:5]:  # media are links inside the out dir that resolve to the real audio
        assert (asr_explorer.parent / r["audio"]).resolve().is_file()


def test_speech_page_sort_by_cer_play_audio_and_diff(page, asr_explorer):
    _open(page, asr_explorer)
    rows = page.locator("#body tr.row")
    assert rows.count() == 50  # paged: 50 of 108 utterances
    assert "108 of 108" in page.inner_text("#count")
    page.click("th[data-key='cer']")  # error columns sort worst first
    cers = [float(x) if x else None for x in page.locator("#body tr.row td.cer").all_inner_texts()]
    assert cers[0] is not None and cers[0] == max(c for c in cers if c is not None) and cers[0] > 0
    assert cers[:2] == sorted(cers[:2], reverse=True) and cers[1] > 0
    _shot(page, "speech-sorted-by-cer")
    # the substitution is marked in the diff of the row that has it
    sub = page.locator("#body tr.row td.text .diff .sub")
    assert sub.count() == 1 and sub.first.inner_text().startswith(REPLACEMENT)
    assert SUBSTITUTED in sub.first.get_attribute("title")
    assert page.locator("#body tr.row td.text .diff .del").count() == 2
    # an audio element plays (opened from disk: the symlinked wav)
    state = page.evaluate("""async () => {
        const a = document.querySelector('#body tr.row audio'); a.preload = 'auto'; a.muted = true;
        await a.play(); await new Promise(r => setTimeout(r, 300));
        return {ready: a.readyState, time: a.currentTime, error: a.error && a.error.code, dur: a.duration};
    }""")
    assert state["ready"] >= 2 and state["error"] is None and state["dur"] > 0.5, state
    # filters: search narrows the rows, errors-only keeps the two wrong ones
    page.check("#errors-only")
    assert page.locator("#body tr.row").count() == 2
    page.uncheck("#errors-only")
    page.fill("#search", "f5")
    page.wait_for_function("document.querySelectorAll('#body tr.row').length < 50")
    assert all("f5" in t for t in page.locator("#body tr.row td.speaker").all_inner_texts())
    assert page.js_errors == []


def test_speech_page_paging_and_waveform_over_http(page, asr_explorer):
    """Served on 127.0.0.1 (what --serve does) the opened row gets its waveform and spectrogram drawn."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(asr_explorer.parent)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
        page.wait_for_selector("body[data-ready='1']")
        page.click("#pager-top button[data-go='2']")  # page 3 of 3: rows 100..107
        assert page.locator("#body tr.row").count() == 8
        page.locator("#body tr.row td.text").first.click()
        page.wait_for_function("document.querySelector('.visual-msg') && /decoded at \\d+ Hz/.test(document.querySelector('.visual-msg').textContent)",
                               timeout=15000)
        inked = page.evaluate("""() => [...document.querySelectorAll('canvas.wave, canvas.spec')].map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250) n++;
            return n / (d.length / 4); })""")
        assert len(inked) == 2 and all(0.01 < x < 0.999 for x in inked), inked
        _shot(page, "speech-waveform-spectrogram")
        assert page.js_errors == []
    finally:
        httpd.shutdown()


def test_compare_two_runs_side_by_side(page, asr_run, tmp_path):
    from hackathon.explore import build

    other = tmp_path / "other"
    (other / "data").mkdir(parents=True)
    preds = [json.loads(x) for x in (asr_run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    for p in preds:  # the compared run gets everything right
        p.update(pred_text=p["text"], char_errors=0, word_errors=0, cer=0.0)
    (other / "predictions.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds),
                                             encoding="utf-8")
    index = build([asr_run], tmp_path / "out", compare=other)
    _open(page, index)
    page.click("th[data-key='cer']")
    first = page.locator("#body tr.row").first
    assert float(first.locator("td.cer").inner_text()) > 0 and first.locator("td.cer2").inner_text() == "0"
    _shot(page, "speech-compare")
    with pytest.raises(HackathonError, match="no predictions"):
        build([asr_run], tmp_path / "out2", compare=tmp_path)


def test_detect_gallery_class_filter_and_confusion_cells(page, detect_run, tmp_path):
    from hackathon.explore import build

    index = build([detect_run], tmp_path / "det")
    _open(page, index)
    total = page.locator(".card").count()
    assert total == 12
    cls = page.eval_on_selector_all("#class option", "os => os.map(o => o.value).filter(Boolean)")[0]
    page.select_option("#class", cls)
    labels = page.eval_on_selector_all(".card svg rect.box", "rs => rs.map(r => r.dataset.label)")
    assert labels and set(labels) == {cls}
    assert 0 < page.locator(".card").count() <= total
    _shot(page, "detect-one-class")
    page.select_option("#class", "")
    # the false-positive cell (background row) links to exactly the image with the fake box
    page.click("#confusion tr:last-child a")
    assert page.locator(".card").count() == 1
    assert page.locator(".card svg rect.pred[data-match='background']").count() == 1
    page.click("#clear-cell")
    page.select_option("#outcome", "miss")
    assert page.locator(".card").count() == 1 and page.locator(".card svg rect.gt[data-match='background']").count() == 1
    _shot(page, "detect-missed")
    assert page.js_errors == []


def test_explore_cli_refuses_a_foreign_out_dir_and_bad_input(tmp_path, asr_run):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    exe = Path(sys.executable).parent / "hackathon"
    proc = subprocess.run([str(exe), "explore", str(asr_run), "--out", str(foreign)], capture_output=True, text=True)
    assert proc.returncode == 1 and "not an explorer folder" in proc.stderr and "fix:" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    proc = subprocess.run([str(exe), "explore", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_tts_run_shows_synthesized_next_to_recorded_with_scores(page, asr_run, tmp_path):
    """A TTS run dir: data/<split>.json, synth/index.jsonl (synth + copy-synthesis per sentence) and
    eval/scores.jsonl (per-clip DNSMOS, PESQ) -> both players and the scores on the sentence's row."""
    import shutil

    from hackathon.explore import build

    run = tmp_path / "tts"
    test_rows = [json.loads(x) for x in (asr_run / "data" / "test_manifest.json").read_text(encoding="utf-8").splitlines()[:3]]
    (run / "data").mkdir(parents=True)
    (run / "data" / "test.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_rows), encoding="utf-8")
    index, scores = [], []
    for i, r in enumerate(test_rows):
        for kind in ("test", "copy"):
            (run / "synth" / kind).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r["audio_filepath"], run / "synth" / kind / f"{i:03d}.wav")
        index.append({"id": f"{i:03d}", "text": r["text"], "reference": r["audio_filepath"],
                      "synth": f"synth/test/{i:03d}.wav", "copy": f"synth/copy/{i:03d}.wav"})
        scores.append({"id": f"{i:03d}", "text": r["text"], "dnsmos": {"ovrl": 2.5 + i / 10}, "ref_dnsmos": {"ovrl": 3.0},
                       "pesq_wb": 1.5 + i / 10})
    for name, rows in (("synth/index.jsonl", index), ("eval/scores.jsonl", scores)):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
    (run / "meta.json").write_text("{}")
    _open(page, build([run], tmp_path / "out"))
    page.click("th[data-key='pesq']")
    page.click("th[data-key='pesq']")  # second click: descending
    first = page.locator("#body tr.row").first
    assert first.locator("td.pesq").inner_text() == "1.7" and first.locator("td.dnsmos").inner_text() == "2.7"
    assert first.locator("audio").count() == 2 and first.locator("audio.synth").get_attribute("src").startswith("media/s")
    _shot(page, "tts-synth-vs-recorded")
    assert page.js_errors == []


def test_plain_manifest_and_plain_dataset_json(page, asr_run, detect_run, tmp_path):
    """Any NeMo manifest (no run dir: no predictions, no vocabulary) and a bare dataset.json (no predictions)."""
    from hackathon.explore import build

    manifest = asr_run / "data" / "val_manifest.json"
    _open(page, build([manifest], tmp_path / "m"))
    n = len(manifest.read_text(encoding="utf-8").splitlines())
    assert page.locator("#body tr.row").count() == n and page.locator("th[data-key='cer']").count() == 0
    assert "no model vocabulary" in page.inner_text("#oov")
    _open(page, build([detect_run / "data" / "dataset.json"], tmp_path / "d"))
    assert page.locator(".card").count() == 12 and page.locator(".card svg rect.pred").count() == 0
    assert "No predictions" in page.inner_text("#confusion-panel")
    assert page.js_errors == []
