"""The real Label Studio (its own venv: `make test` runs `hackathon label studio --setup` first), started by
`hackathon label studio` on a free loopback port with a temp data folder, one server for the module.

Pre-labelled from the serving tests' small trained detector (tests/conftest.py: detect_tiny_run) and an asr
run's transcripts; annotations submitted through its API as a labeller's browser does; `--export OUT` ->
`hackathon run detect data.source=OUT --only prepare` / `hackathon data prepare-audio OUT` hold exactly what
was submitted, and each quirk of the real export is named with its fix; the labelling page in Debian's
chromium; SIGTERM leaves no process and keeps the database."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hackathon.label import server
from hackathon.label.studio import PROJECTS, Api, ensure_projects, local_url, project_tasks
from tests.explore.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.serve.conftest import alive, children, free_ports, hackathon_exe

pytestmark = pytest.mark.label_studio
REPO = Path(__file__).resolve().parents[2]
SHOTS = Path("/tmp/hackathon-tests")
CLASSES = ["with_mask", "without_mask", "mask_weared_incorrect"]


def cli(env: dict, *args: str, timeout: float = 300, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run([hackathon_exe(), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode in ok, f"hackathon {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on `port` (from /proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)) if len(addr) == 8 else addr)
    return found


def group_alive(pgid: int) -> bool:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True).returncode == 0


def start_studio(env: dict, port: int, images: Path, audio: Path, log: Path) -> subprocess.Popen:
    """`hackathon label studio` serving (its own session, so the test can check its group after SIGTERM)."""
    proc = subprocess.Popen([hackathon_exe(), "label", "studio", "--port", str(port), "--images", str(images),
                             "--audio", str(audio)], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + server.START_TIMEOUT_S
    while "Label Studio: http" not in log.read_text():
        assert proc.poll() is None, f"hackathon label studio exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (our CLI stops Label Studio's own group), then SIGKILL whatever is left."""
    pids = [proc.pid, *children(proc.pid)]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def wait_gone(groups: set[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.2)
    assert not any(group_alive(g) for g in groups), f"processes left in groups {groups}"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, detect_tiny_run):
    if not server.venv_ready():
        pytest.fail(f"Label Studio's venv {server.venv_dir()} is not made: run `hackathon label studio --setup` "
                    "(make test does it first).")
    from data_tools.speech_synth import synth_speech

    base = tmp_path_factory.mktemp("studio")
    # The detector's test-split images, copied: one gets deleted later (the 'image gone' quirk); --from-run
    # finds them by content.
    images = base / "images"
    images.mkdir()
    split = json.loads((detect_tiny_run / "split" / "test.json").read_text())
    for im in split["images"]:
        shutil.copy(im["file_name"], images / Path(im["file_name"]).name)
    corpus = synth_speech("asr", base / "speech", renditions=1, noise=False)
    clips = [json.loads(line) for line in Path(corpus["manifests"]["test"]).read_text().splitlines()][:5]
    audio = base / "audio"
    audio.mkdir()
    for c in clips:
        shutil.copy(c["audio_filepath"], audio / Path(c["audio_filepath"]).name)
        c["audio_filepath"] = str(audio / Path(c["audio_filepath"]).name)
    asr_run = base / "asr_run"  # an asr run's evaluate output: its transcripts become predictions
    asr_run.mkdir()
    (asr_run / "meta.json").write_text(json.dumps({"task": "asr"}))
    (asr_run / "predictions.jsonl").write_text("".join(
        json.dumps({**c, "pred_text": c["text"][:-1], "cer": 1 / len(c["text"])}, ensure_ascii=False) + "\n" for c in clips),
        encoding="utf-8")
    env = {**os.environ, "HACKATHON_LABEL_STUDIO_DIR": str(base / "studio"),
           "PYTHONPATH": str(REPO) + (":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    port = free_ports(1)[0]
    os.environ["HACKATHON_LABEL_STUDIO_DIR"] = env["HACKATHON_LABEL_STUDIO_DIR"]  # server.admin() reads the token here
    started = time.monotonic()
    proc = start_studio(env, port, images, audio, base / "studio.log")
    try:
        url = f"http://127.0.0.1:{port}"
        yield SimpleNamespace(proc=proc, url=url, port=port, env=env, base=base, images=images, audio=audio,
                              clips=clips, asr_run=asr_run, api=Api(url, server.admin()[2]), log=base / "studio.log",
                              start_s=time.monotonic() - started, annotated={})
    finally:
        stop(proc)
        os.environ.pop("HACKATHON_LABEL_STUDIO_DIR", None)


def test_projects_once_and_prelabelled_from_runs(studio, detect_tiny_run):
    ids = ensure_projects(studio.api)
    assert ensure_projects(studio.api) == ids  # found again by title, not made twice
    assert sorted(p["title"] for p in studio.api.pages("/api/projects")) == sorted(s["title"] for s in PROJECTS.values())
    images = sorted(studio.images.iterdir())
    assert len(project_tasks(studio.api, ids["detection"])) == len(images)

    first = cli(studio.env, "label", "studio", "--from-run", str(detect_tiny_run), "--from-run", str(studio.asr_run))
    again = cli(studio.env, "label", "studio", "--from-run", str(detect_tiny_run), "--from-run", str(studio.asr_run))
    assert f"{len(images)} predictions -> detection (0 new tasks, 0 already there)" in first, first
    assert f"0 predictions -> detection (0 new tasks, {len(images)} already there)" in again, again
    assert f"{len(studio.clips)} predictions -> transcription (0 new tasks, 0 already there)" in first, first

    tasks = project_tasks(studio.api, ids["detection"])
    assert len(tasks) == len(images)  # the run's images matched the copies by content: no second task each
    preds = {t["id"]: t["predictions"] for t in tasks}
    assert all(len(p) == 1 and p[0]["model_version"] == detect_tiny_run.name for p in preds.values())
    assert sum(len(p[0]["result"]) for p in preds.values()) > 0, "the detector pre-labelled no box at all"
    audio = project_tasks(studio.api, ids["transcription"])
    texts = {t["predictions"][0]["result"][0]["value"]["text"][0] for t in audio}
    assert texts == {c["text"][:-1] for c in studio.clips}
    studio.ids = ids


def rect(label: str, box: tuple[float, float, float, float], w: int, h: int, rotation: float = 0) -> dict:
    x1, y1, x2, y2 = box
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w, "height": 100 * (y2 - y1) / h,
                      "rotation": rotation, "rectanglelabels": [label]}}


def annotate(api: Api, task: int, result: list, cancelled: bool = False) -> dict:
    # what the labelling page sends on Submit (Skip: was_cancelled with an empty result)
    return api("POST", f"/api/tasks/{task}/annotations", {"result": result, "was_cancelled": cancelled, "lead_time": 3.5})


def test_submitted_boxes_exported_and_ingested_exactly_quirks_named(studio, tmp_path):
    from PIL import Image

    from data_tools.detection.dataset import load_dataset

    tasks = sorted(project_tasks(studio.api, studio.ids["detection"]), key=lambda t: t["id"])
    path_of = {t["id"]: studio.images / Path(t["data"]["image"]).name for t in tasks}
    size = {t: Image.open(path).size for t, path in path_of.items()}  # the demo's sides vary 0.8x..1.25x of 320
    expected = {}  # image name -> [(label, x1, y1, x2, y2)] in pixels
    boxes = [("with_mask", (10.4, 12.6, 61.3, 70.9)), ("without_mask", (80, 33.3, 141.7, 99)),
             ("mask_weared_incorrect", (120.2, 110.5, 170.8, 160.1))]
    for i, t in enumerate(tasks[:3]):  # a labeller draws one to three boxes
        annotate(studio.api, t["id"], [rect(label, b, *size[t["id"]]) for label, b in boxes[:i + 1]])
        expected[path_of[t["id"]].name] = [(label, *b) for label, b in boxes[:i + 1]]
    rotated, unknown, gone, skipped, empty = (t["id"] for t in tasks[3:8])
    annotate(studio.api, rotated, [rect("with_mask", (20, 20, 60, 50), *size[rotated], rotation=90)])
    expected[path_of[rotated].name] = [("with_mask", -10, 20, 20, 60)]  # turned about its top-left corner
    annotate(studio.api, unknown, [rect("hat", (5, 5, 30, 30), *size[unknown]), rect("without_mask", (40, 40, 90, 95), *size[unknown])])
    expected[path_of[unknown].name] = [("without_mask", 40, 40, 90, 95)]
    annotate(studio.api, gone, [rect("with_mask", (5, 5, 30, 30), *size[gone])])
    path_of[gone].unlink()  # moved away after labelling
    annotate(studio.api, skipped, [], cancelled=True)
    annotate(studio.api, empty, [])

    out = tmp_path / "labelled"
    cli(studio.env, "label", "studio", "--export", str(out))
    exported = json.loads((out / "detection.label-studio.json").read_text())
    assert len(exported) == len(tasks) and sum(len(t["annotations"]) for t in exported) == 8
    cli(studio.env, "label", "studio", "--export", str(out))  # again into its own earlier export: fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused = subprocess.run([hackathon_exe(), "label", "studio", "--export", str(tmp_path / "mine")], env=studio.env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "not an earlier" in refused.stdout + refused.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"

    before = {p: sha(p) for p in [*studio.images.iterdir(), *out.iterdir()]}
    run_dir = tmp_path / "run"
    cli(studio.env, "run", "detect", "--run-dir", str(run_dir), f"data.source={out}", "--only", "prepare", timeout=600)
    assert {p: sha(p) for p in before} == before  # sources are read, never written
    ds = load_dataset(run_dir / "data" / "dataset.json")
    got = {im.path.name: im for im in ds.images}
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        im = got[name]
        have = sorted((b.label, b.x1, b.y1, b.x2, b.y2) for b in im.boxes)
        want = sorted((label, max(0, x1), y1, x2, y2) for label, x1, y1, x2, y2 in want)  # clipped to the image
        assert [b[0] for b in have] == [b[0] for b in want], name
        assert all(abs(a - b) <= 1 for hb, wb in zip(have, want) for a, b in zip(hb[1:], wb[1:])), (name, have, want)
    report = json.loads((run_dir / "data" / "report.json").read_text())
    for kind in ("rotated_box", "unknown_class", "missing_image", "skipped_task", "empty_annotation", "unlabelled_task"):
        assert report["issues"].get(kind), (kind, report["issues"].keys())
        assert all(i.get("fix") for i in report["issues"][kind]), (kind, report["issues"][kind])
    assert path_of[gone].name in report["issues"]["missing_image"][0]["detail"]
    assert f"#task {skipped}" in report["issues"]["skipped_task"][0]["file"]
    assert f"#task {empty}" in report["issues"]["empty_annotation"][0]["file"]
    assert "hat" in json.dumps(report["issues"]["unknown_class"])
    assert len(report["issues"]["unlabelled_task"]) == len(tasks) - 8

    status = cli(studio.env, "label", "studio", "--status")
    assert "detection (project" in status and f"6/{len(tasks)} tasks labelled, 1 skipped" in status, status
    assert "with_mask 5, without_mask 3, mask_weared_incorrect 1, hat 1" in status, status
    assert "admin@hackathon.local 7, admin@hackathon.local (skipped) 1" in status, status


def test_submitted_transcripts_exported_and_prepared_exactly(studio, tmp_path):
    tasks = sorted(project_tasks(studio.api, studio.ids["transcription"]), key=lambda t: t["id"])
    name_of = {t["id"]: Path(t["data"]["audio"]).name for t in tasks}
    said = {}
    for t in tasks[:3]:  # the labeller corrects the model's transcript (it dropped the last character)
        text = next(c["text"] for c in studio.clips if Path(c["audio_filepath"]).name == name_of[t["id"]])
        annotate(studio.api, t["id"], [{"from_name": "transcription", "to_name": "audio", "type": "textarea",
                                         "value": {"text": [text]}}])
        said[name_of[t["id"]]] = text
    annotate(studio.api, tasks[3]["id"], [], cancelled=True)
    annotate(studio.api, tasks[4]["id"], [])
    out = tmp_path / "labelled"
    cli(studio.env, "label", "studio", "--export", str(out))
    prepared = tmp_path / "prepared"
    cli(studio.env, "data", "prepare-audio", str(out), "--task", "asr", "--out", str(prepared), ok=(2,))  # 2: some rejected
    rows = [json.loads(line) for line in (prepared / "manifest.json").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["text"] for r in rows) == sorted(said.values())
    report = json.loads((prepared / "report.json").read_text(encoding="utf-8"))
    kinds = sorted(r["kind"] for r in report["rejected"])
    assert kinds == ["empty_annotation", "skipped_task"], report["rejected"]


def test_labelling_page_shows_prelabelled_boxes_and_the_three_classes(studio, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    tasks = project_tasks(studio.api, studio.ids["detection"])
    task = max((t for t in tasks if not t["annotations"]), key=lambda t: len(t["predictions"][0]["result"]))
    predicted = sorted(r["value"]["rectanglelabels"][0] for r in task["predictions"][0]["result"])
    assert predicted, "the detector pre-labelled no box on any unlabelled image"
    email, password, _ = server.admin()
    shot = tmp_path / "label-studio-page.png"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{studio.url}/user/login/")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/user/login" not in u)
        page.goto(f"{studio.url}/projects/{studio.ids['detection']}/data?task={task['id']}")
        regions = page.locator(".lsf-tree__node_type_rectangleregion")
        regions.first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)  # the image and its boxes are drawn after the region list
        page.screenshot(path=str(shot))
        classes = page.locator(".lsf-label__text").all_inner_texts()
        titles = sorted(page.locator(".lsf-outliner-item__title").all_inner_texts())
        n_regions = regions.count()
        shown = [img.get_attribute("src") or "" for img in page.locator("img[src*='local-files']").all()]
        browser.close()
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / "label-studio-page.png")
    assert classes == CLASSES
    assert n_regions == len(predicted) and titles == predicted
    assert local_url(studio.images / Path(task["data"]["image"]).name) in shown  # served where it lies


def test_loopback_only_and_sigterm_stops_every_process_keeping_the_database(studio):
    assert listening_addresses(studio.port) == {"127.0.0.1"}
    pids = [studio.proc.pid, *children(studio.proc.pid)]
    groups = {os.getpgid(p) for p in pids if alive(p)}
    assert len(groups) == 2  # ours and Label Studio's own
    studio.proc.send_signal(signal.SIGTERM)
    assert studio.proc.wait(timeout=60) == 0, studio.log.read_text()[-2000:]
    wait_gone(groups)
    assert not listening_addresses(studio.port)
    database = studio.base / "studio" / "data" / "label_studio.sqlite3"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        assert db.execute("select count(*) from task_completion").fetchone()[0] == 13  # 8 boxes + 5 transcripts
        assert db.execute("select count(*) from project").fetchone()[0] == 2
    assert "SIGTERM: stopping Label Studio" in studio.log.read_text()


def test_restart_finds_projects_and_annotations_and_kill_9_leaves_no_label_studio(studio):
    port = free_ports(1)[0]
    proc = start_studio(studio.env, port, studio.images, studio.audio, studio.base / "restart.log")
    try:
        api = Api(f"http://127.0.0.1:{port}", server.admin()[2])
        assert ensure_projects(api) == studio.ids
        assert sum(len(t["annotations"]) for t in project_tasks(api, studio.ids["detection"])) == 8
        assert "detection: 0 new tasks" in (studio.base / "restart.log").read_text()
        groups = {os.getpgid(p) for p in [proc.pid, *children(proc.pid)] if alive(p)}
        assert len(groups) == 2
        proc.kill()  # kill -9 of `hackathon label studio`: no clean-up of ours runs; the kernel tells Label Studio
        proc.wait()
        wait_gone(groups, timeout=40)
    finally:
        stop(proc)
