"""`hackathon label studio` against the real Label Studio (its own venv), started by the test on loopback:
projects, pre-labels from a detect run and an asr run, annotations through its API, export, ingest and
prepare-audio back; the labelling page in Debian's chromium; the quirks; 127.0.0.1 and SIGTERM.

The detect run is a run layout written here (ingested demo images, split/test.json, predictions/test.json
with boxes jittered from the demo's truth and made-up scores), not a trained model: training the demo
detector costs minutes the suite does not have. The asr run likewise is a predictions.jsonl written here.

Needs Label Studio's venv (~/.local/share/hackathon/label-studio-venv, made once from the registry if
missing). Without it and without the registry the tests fail, saying so: they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hackathon.core.atomic import atomic_write_json, atomic_write_jsonl

pytestmark = pytest.mark.label_studio
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SCREENSHOT_COPY = Path(os.environ.get("HACKATHON_TEST_TMP", "/tmp/hackathon-tests")) / "label-studio-page.png"
TEXTS = ["你好大白请让我进入小区", "你好大白", "请让我进入小区"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} write them) listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                found.append(local.rsplit(":", 1)[0])
    return found


def _group_alive(pgid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout.split("\n")
    return [int(p) for p, g in (ln.split() for ln in out if ln.strip()) if int(g) == pgid]


def _wav(path: Path, freq: float, seconds: float = 1.2) -> Path:
    from data_tools.audio import write_wav

    t = np.arange(int(16000 * seconds)) / 16000
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(str(path), (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype("float32"), 16000)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Demo images + a detect run layout, clips + an asr run, and the CLI serving Label Studio on them."""
    from hackathon.label import server

    base = tmp_path_factory.mktemp("studio")
    if not server.venv_ready():
        try:
            server.ensure_venv()
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"Label Studio's venv {server.venv_dir()} is missing and could not be made ({exc}); it needs "
                        "the package registry once: run `hackathon label studio --setup`.")
    from data_tools.detection.dataset import load_dataset, save_dataset
    from data_tools.detection.ingest import ingest
    from data_tools.detection.synth_masks import synth_masks

    demo = synth_masks(base / "demo", num_images=6, seed=3, image_size=200, max_faces=2)
    run = base / "runs" / "detect" / "demo-run"
    ds_json, _ = ingest([demo], run / "data", html=False)
    ds = load_dataset(ds_json)
    save_dataset(ds, run / "split" / "test.json")
    ds = load_dataset(run / "split" / "test.json")
    rng = np.random.default_rng(0)
    dets = []
    for im in ds.images:
        for b in im.boxes:
            j = rng.uniform(-3, 3, 4)
            dets.append({"image_id": im.id, "category_id": ds.category_id(b.label), "score": float(rng.uniform(0.35, 0.99)),
                         "bbox": [b.x1 + j[0], b.y1 + j[1], b.width + j[2], b.height + j[3]]})
        dets.append({"image_id": im.id, "category_id": 1, "score": 0.05, "bbox": [1, 1, 5, 5]})  # below --min-score
    atomic_write_json(run / "predictions" / "test.json", dets)
    atomic_write_json(run / "meta.json", {"task": "detect"})

    clips = base / "clips"
    wavs = [_wav(clips / f"spk{i}" / f"c{i}.wav", 300 + 150 * i) for i in range(3)]
    asr_run = base / "runs" / "asr" / "asr-run"
    atomic_write_jsonl(asr_run / "predictions.jsonl", [
        {"audio_filepath": str(w), "text": TEXTS[i], "pred_text": TEXTS[i][: len(TEXTS[i]) - i], "cer": i / 10}
        for i, w in enumerate(wavs)])
    atomic_write_json(asr_run / "meta.json", {"task": "asr"})
    extra = base / "extra"  # images for the quirks; one is deleted after import
    extra.mkdir()
    from PIL import Image

    for i, name in enumerate(["rot.jpg", "unknown.jpg", "gone.jpg", "skip.jpg", "empty.jpg"]):
        im = Image.open(sorted((demo / "images").iterdir())[i]).convert("RGB")
        im.paste((255, 0, 255), (0, 0, 8, 8))  # other bytes than the demo image (matching goes by content)
        im.save(extra / name, quality=90)

    env = {**os.environ, "HACKATHON_LABEL_STUDIO_DIR": str(base / "studio"), "PYTHONPATH": str(REPO),
           "HOST": "0.0.0.0", "PASSWORD": "leaked"}  # stray bare names Label Studio would read: must not reach it
    port = _free_port()
    cli = [sys.executable, "-m", "hackathon.cli", "label", "studio", "--port", str(port)]
    t0 = time.monotonic()
    proc = subprocess.Popen([*cli, "--images", str(demo / "images"), "--images", str(extra), "--audio", str(clips)],
                            env=env, cwd=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    info = base / "studio" / "server.json"
    while not info.exists():
        if proc.poll() is not None or time.monotonic() - t0 > 900:
            proc.kill()
            pytest.fail(f"`hackathon label studio` did not come up:\n{proc.stdout.read()}")
        time.sleep(1)
    os.environ["HACKATHON_LABEL_STUDIO_DIR"] = str(base / "studio")
    from hackathon.label.studio import Api, ensure_projects

    api = Api(json.loads(info.read_text())["url"], server.admin()[2])
    w = {"base": base, "demo": demo, "run": run, "asr_run": asr_run, "clips": clips, "wavs": wavs, "extra": extra,
         "env": env, "port": port, "cli": cli, "proc": proc, "api": api, "ids": ensure_projects(api),
         "startup_s": time.monotonic() - t0}
    yield w
    if proc.poll() is None:
        proc.kill()
    os.environ.pop("HACKATHON_LABEL_STUDIO_DIR", None)


def _cli(w, *args, check=True) -> str:
    out = subprocess.run([*w["cli"], *args], env=w["env"], cwd=w["base"], capture_output=True, text=True, timeout=600)
    assert not check or out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def _tasks(w, kind):
    from hackathon.label.studio import project_tasks

    return project_tasks(w["api"], w["ids"][kind])


def _rect(box, width, height, rotation=0.0):
    label, x1, y1, x2, y2 = box
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": width,
            "original_height": height, "image_rotation": 0,
            "value": {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width,
                      "height": 100 * (y2 - y1) / height, "rotation": rotation, "rectanglelabels": [label]}}


def test_binds_loopback_and_makes_projects_once(world):
    api, ids = world["api"], world["ids"]
    assert set(_listening(world["port"])) <= {"0100007F", "0000000000000000FFFF00000100007F"} and _listening(world["port"])
    assert api.url.startswith("http://127.0.0.1:")
    from hackathon.label import server

    token = server.admin()[2]
    pids = subprocess.run(["pgrep", "-f", f"label-studio start.*--port {world['port']}"], capture_output=True, text=True).stdout.split()
    assert pids and not any(token in Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in pids)
    assert token not in (world["base"] / "studio" / "server.log").read_text(errors="replace")
    titles = [p["title"] for p in api.pages("/api/projects")]
    assert sorted(titles) == ["hackathon: face masks", "hackathon: transcripts"]
    config = api("GET", f"/api/projects/{ids['detection']}")["label_config"]
    assert all(f'value="{c}"' in config for c in ("with_mask", "without_mask", "mask_weared_incorrect"))
    assert len(_tasks(world, "detection")) == 6 + 5 and len(_tasks(world, "transcription")) == 3
    # files are served from where they lie (local-files), not copied into Label Studio's media
    url = _tasks(world, "detection")[0]["data"]["image"]
    assert url.startswith("/data/local-files/?d=")
    assert not list((world["base"] / "studio" / "data").rglob("*.jpg"))
    print(f"startup to ready: {world['startup_s']:.0f} s")


def test_from_run_prelabels_least_sure_first(world):
    out = _cli(world, "--from-run", str(world["run"]), "--from-run", str(world["asr_run"]))
    assert "6 predictions -> detection (0 new tasks" in out and "3 predictions -> transcription (0 new tasks" in out, out
    again = _cli(world, "--from-run", str(world["run"]))
    assert "0 predictions" in again and "6 already there" in again, again  # idempotent
    api, det = world["api"], world["ids"]["detection"]
    tasks = [t for t in _tasks(world, "detection") if t.get("predictions")]
    assert len(tasks) == 6
    preds = {t["id"]: api("GET", "/api/predictions", task=t["id"])[0] for t in tasks}
    assert all(r["score"] >= 0.3 for p in preds.values() for r in p["result"])  # the 0.05 box was left out
    least = min(preds, key=lambda k: preds[k]["score"])
    assert api("GET", f"/api/projects/{det}/next")["id"] == least
    clip = api("GET", "/api/predictions", task=min(t["id"] for t in _tasks(world, "transcription")))[0]
    assert clip["result"][0]["value"]["text"] == [TEXTS[0]]


def test_labelling_page_in_chromium(world, tmp_path):
    from playwright.sync_api import sync_playwright

    from hackathon.label import server

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium`")
    api, det = world["api"], world["ids"]["detection"]
    task = next(t for t in sorted(_tasks(world, "detection"), key=lambda t: t["id"]) if t.get("predictions"))
    email, password, _ = server.admin()
    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})

        def only_loopback(route):
            if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page.route("**/*", only_loopback)
        page.goto(f"{api.url}/user/login/")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/user/login" not in u, timeout=60000)
        page.goto(f"{api.url}/projects/{det}/data?task={task['id']}")
        page.wait_for_selector("canvas", timeout=120000)
        for cls in ("with_mask", "without_mask", "mask_weared_incorrect"):
            page.get_by_text(cls, exact=True).first.wait_for(state="visible", timeout=60000)
        page.wait_for_timeout(3000)
        shot = tmp_path / "label-studio-page.png"
        page.screenshot(path=str(shot))
        regions = page.locator("[class*=region]").count() + page.locator("[class*=Region]").count()
        browser.close()
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SCREENSHOT_COPY)
    assert shot.stat().st_size > 20000 and regions > 0


def test_round_trip_detect_and_asr(world):
    from data_tools.detection.dataset import load_dataset
    from data_tools.detection.ingest import ingest
    from data_tools.label_studio import resolve_media
    from data_tools.prepare_audio import prepare_audio

    api, base = world["api"], world["base"]
    submitted = {}
    for i, t in enumerate(sorted(_tasks(world, "detection"), key=lambda t: t["id"])):
        path = resolve_media(t["data"]["image"], Path("/"))
        if path.parent != world["demo"] / "images":
            continue
        from PIL import Image

        wdt, hgt = Image.open(path).size
        boxes = [("with_mask", 10 + i, 12, 60 + i, 70), ("mask_weared_incorrect", 80, 30 + i, 120.5, 90)]
        api("POST", f"/api/tasks/{t['id']}/annotations", {"result": [_rect(b, wdt, hgt) for b in boxes]})
        submitted[path.name] = sorted(boxes)
    alice = api("POST", "/api/users", {"email": "alice@hackathon.local", "username": "alice", "password": "x" * 12})
    for i, t in enumerate(sorted(_tasks(world, "transcription"), key=lambda t: t["id"])):  # a second member's work
        api("POST", f"/api/tasks/{t['id']}/annotations", {"completed_by": alice["id"], "result": [
            {"from_name": "transcription", "to_name": "audio", "type": "textarea", "value": {"text": [TEXTS[i]]}}]})
    out = base / "export"
    _cli(world, "--export", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["detection.label-studio.json", "label-studio-export.json",
                                                    "transcription.label-studio.json"]
    ds_json, report = ingest([out], base / "ingested", html=False)
    ds = load_dataset(ds_json)
    assert len(ds.images) == len(submitted) == 6
    for im in ds.images:
        sha_name = next(n for n in submitted if (world["demo"] / "images" / n).read_bytes() == im.path.read_bytes())
        have = sorted((b.label, b.x1, b.y1, b.x2, b.y2) for b in im.boxes)
        want = submitted[sha_name]
        assert [h[0] for h in have] == [w_[0] for w_ in want]
        assert np.allclose([h[1:] for h in have], [w_[1:] for w_ in want], atol=1.0), (have, want)
    assert {"unlabelled_task"} <= set(report.counts())  # the quirk images not annotated yet
    result = prepare_audio(out, base / "audio-ready", task="asr")
    manifest = [json.loads(ln) for ln in result.manifest_path.read_text().splitlines()]
    assert sorted(m["text"] for m in manifest) == sorted(TEXTS) and result.accepted == 3
    assert sorted(m["speaker"] for m in manifest) == ["spk0", "spk1", "spk2"]
    # what `hackathon run detect|asr data.source=OUT` hand to the same readers
    from data_tools.detection.formats import detect_formats

    assert detect_formats(out) == ["label_studio"]
    st = _cli(world, "--status")
    assert "with_mask 6" in st and "mask_weared_incorrect 6" in st and "without_mask 0" in st, st
    assert "admin@hackathon.local 6" in st and "alice@hackathon.local 3" in st and "/user/signup/?token=" in st, st


def test_quirky_export_is_named_and_the_rest_ingested(world):
    from data_tools.detection.dataset import load_dataset
    from data_tools.detection.ingest import ingest
    from data_tools.label_studio import resolve_media

    api, base = world["api"], world["base"]
    tasks = {resolve_media(t["data"]["image"], Path("/")).name: t for t in _tasks(world, "detection")
             if resolve_media(t["data"]["image"], Path("/")).parent == world["extra"]}
    from PIL import Image

    wdt, hgt = Image.open(world["extra"] / "rot.jpg").size
    post = lambda name, body: api("POST", f"/api/tasks/{tasks[name]['id']}/annotations", body)  # noqa: E731
    post("rot.jpg", {"result": [_rect(("without_mask", 20, 20, 60, 40), wdt, hgt, rotation=90),
                                _rect(("with_mask", 100, 100, 140, 150), wdt, hgt)]})
    post("unknown.jpg", {"result": [_rect(("hat", 20, 20, 60, 40), wdt, hgt), _rect(("with_mask", 5, 5, 50, 50), wdt, hgt)]})
    post("gone.jpg", {"result": [_rect(("with_mask", 5, 5, 50, 50), wdt, hgt)]})
    post("skip.jpg", {"result": [], "was_cancelled": True})
    post("empty.jpg", {"result": []})
    (world["extra"] / "gone.jpg").unlink()
    out = base / "export-quirks"
    _cli(world, "--export", str(out))
    before = {p: p.read_bytes() for p in [*out.iterdir(), *world["extra"].iterdir()]}
    ds_json, report = ingest([out], base / "ingested-quirks", html=False)
    issues = report.issues
    for kind in ("rotated_box", "unknown_class", "missing_image", "skipped_task", "empty_annotation"):
        assert kind in issues and all(i.get("fix") for i in issues[kind]), (kind, issues.keys())
    assert any("'hat'" in i["detail"] for i in issues["unknown_class"])
    assert any("gone.jpg" in i["detail"] for i in issues["missing_image"])
    ds = load_dataset(ds_json)
    by_name = {Path(im.source.split("#")[0]).name + im.source.split("#")[1]: im for im in ds.images}
    assert len(ds.images) == 6 + 2  # the six clean images, rot.jpg and unknown.jpg
    extra = {tuple(sorted((b.label, round(b.x1), round(b.y1), round(b.x2), round(b.y2)) for b in im.boxes))
             for im in by_name.values() if im.path.name in ("rot.jpg", "unknown.jpg")}
    # rotated 90 deg clockwise about its top-left (20,20): w=40,h=20 -> x from 0 to 20, y from 20 to 60
    assert extra == {(("with_mask", 100, 100, 140, 150), ("without_mask", 0, 20, 20, 60)), (("with_mask", 5, 5, 50, 50),)}
    assert before == {p: p.read_bytes() for p in before}  # nothing of the sources touched
    (base / "theirs").mkdir()
    (base / "theirs" / "notes.txt").write_text("mine")
    refused = _cli(world, "--export", str(base / "theirs"), check=False)
    assert "not writing there" in refused and (base / "theirs" / "notes.txt").read_text() == "mine"


def test_sigterm_stops_every_process_and_keeps_the_database(world):
    proc = world["proc"]
    pgid = os.getpgid(proc.pid)
    children = [pid for pid in _group_alive(pgid) if pid != proc.pid]
    ls_pids = [int(p) for p in subprocess.run(["pgrep", "-f", f"label-studio start.*--port {world['port']}"],
                                              capture_output=True, text=True).stdout.split()]
    assert ls_pids, "Label Studio's own process was not found"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    time.sleep(1)
    assert not _group_alive(pgid), children
    assert not [p for p in ls_pids if Path(f"/proc/{p}").exists()]
    assert not _listening(world["port"])
    assert (world["base"] / "studio" / "data" / "label_studio.sqlite3").stat().st_size > 100000
    assert not (world["base"] / "studio" / "server.json").exists()
    assert oct((world["base"] / "studio" / "api-token").stat().st_mode & 0o777) == "0o600"
