"""`hackathon label studio`: the team's two Label Studio projects over its HTTP API (urllib, token auth).

- detection: Image + RectangleLabels with our three classes; transcription: Audio + TextArea, one task per clip.
  Created once (found again by title); each folder of --images / --audio becomes a local-files storage
  (files served where they lie) and one task per file not yet in the project.
- --from-run: a detect run's predictions/<split>.json (boxes + scores on split/<split>.json's images), an
  asr run's predictions.jsonl (transcripts; score = 1 - CER against the reference) -> predictions with
  model_version = the run's name. Projects use uncertainty sampling, so each labeller gets the
  lowest-scored task first; new tasks are imported lowest score first too.
- --export OUT: each project's own JSON export, as `detect ingest` / `data prepare-audio` (and so
  `hackathon run detect|asr data.source=OUT`) read it; --status: annotations per class and per person.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import quote, urlencode

from hackathon.core.atomic import atomic_write_json, read_json, read_jsonl
from hackathon.core.errors import HackathonError
from hackathon.core.fingerprint import file_sha256

from data_tools import label_studio as ls
from data_tools.detection.classes import CANONICAL_CLASSES
from data_tools.detection.formats import IMAGE_EXTENSIONS
from data_tools.prepare_audio import AUDIO_EXTENSIONS

COLOURS = ("#2ca02c", "#d62728", "#ff7f0e")
PROJECTS = {
    "detection": {"title": "hackathon: face masks", "key": "image", "extensions": IMAGE_EXTENSIONS,
                  "label_config": "<View><Image name=\"image\" value=\"$image\" zoom=\"true\"/>"
                                  "<RectangleLabels name=\"label\" toName=\"image\">"
                                  + "".join(f"<Label value=\"{c}\" background=\"{k}\"/>" for c, k in zip(CANONICAL_CLASSES, COLOURS))
                                  + "</RectangleLabels></View>"},
    "transcription": {"title": "hackathon: transcripts", "key": "audio", "extensions": AUDIO_EXTENSIONS,
                      "label_config": "<View><Audio name=\"audio\" value=\"$audio\"/>"
                                      "<TextArea name=\"transcription\" toName=\"audio\" rows=\"2\" editable=\"true\" "
                                      "maxSubmissions=\"1\"/></View>"},
}
EXPORT_MARK = "label-studio-export.json"
DEFAULT_MIN_SCORE = 0.3


class Api:
    def __init__(self, url: str, token: str):
        self.url, self._auth = url.rstrip("/"), {"Authorization": f"Token {token}"}

    def __call__(self, method: str, path: str, body=None, **query):
        url = f"{self.url}{path}" + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={**self._auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                raw = r.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:600]
            fix = ("The API token in the studio folder does not match this database's admin: set LABEL_STUDIO_USER_TOKEN "
                   "to the admin's token (Account & Settings in the web page)." if exc.code == 401
                   else "See Label Studio's answer above and its server.log.")
            raise HackathonError(f"Label Studio {method} {path}: HTTP {exc.code}: {detail}", fix=fix) from None
        return json.loads(raw) if raw else None

    def pages(self, path: str, key: str | None = None, **query):
        page = 1
        while True:
            try:
                got = self("GET", path, page=page, page_size=100, **query)
            except HackathonError as exc:
                if "HTTP 404" in exc.message and page > 1:
                    return
                raise
            items = got if isinstance(got, list) else got.get(key or "results", [])
            yield from items
            if isinstance(got, list) or not items or (isinstance(got, dict) and key is None and not got.get("next")):
                return
            page += 1


# ----------------------------------------------------------------------------- projects, files, tasks

def local_url(path: Path) -> str:
    """Label Studio's link to a local file (our server's LOCAL_FILES_DOCUMENT_ROOT is /)."""
    return f"/data/local-files/?d={quote(str(path.resolve()).lstrip('/'))}"


def ensure_projects(api: Api) -> dict[str, int]:
    """{"detection": id, "transcription": id}; created once, found again by title."""
    existing = {p["title"]: p["id"] for p in api.pages("/api/projects")}
    ids = {}
    for kind, spec in PROJECTS.items():
        if spec["title"] not in existing:
            existing[spec["title"]] = api("POST", "/api/projects", {
                "title": spec["title"], "label_config": spec["label_config"], "sampling": "Uncertainty sampling",
                "show_collab_predictions": True, "description": f"hackathon label studio: {kind}"})["id"]
        ids[kind] = existing[spec["title"]]
    return ids


def _ensure_storage(api: Api, project: int, folder: Path) -> None:
    folder = folder.resolve()
    if not any(Path(s["path"]) == folder for s in api("GET", "/api/storages/localfiles", project=project)):
        api("POST", "/api/storages/localfiles", {"project": project, "path": str(folder), "title": folder.name,
                                                 "use_blob_urls": True, "regex_filter": ""})


def project_tasks(api: Api, project: int) -> list[dict]:
    return list(api.pages("/api/tasks", key="tasks", project=project, fields="all"))


def task_files(api: Api, project: int, key: str) -> dict[Path, dict]:
    """{local file: task} of a project's tasks."""
    out = {}
    for t in project_tasks(api, project):
        url = (t.get("data") or {}).get(key)
        if url:
            out[ls.resolve_media(url, Path("/"))] = t
    return out


def add_files(api: Api, project: int, kind: str, folders: list[Path], predictions: dict[Path, dict] | None = None) -> int:
    """One task per file of `folders` (and per file in `predictions`) not yet in the project; returns how
    many were made. predictions: {file: {"result", "score", "model_version"}}, imported with the task."""
    spec = PROJECTS[kind]
    files = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise HackathonError(f"{folder} is not a folder.", fix=f"Give folders of {kind} files.")
        files += sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in spec["extensions"])
    files += [p for p in (predictions or {}) if p not in files]
    have = task_files(api, project, spec["key"])
    new = [p.resolve() for p in files if p.resolve() not in have]
    for folder in sorted({p.parent for p in new}):
        _ensure_storage(api, project, folder)
    predictions = predictions or {}
    new.sort(key=lambda p: predictions[p]["score"] if p in predictions else 2.0)  # least sure first
    tasks = [{"data": {spec["key"]: local_url(p)}, **({"predictions": [predictions[p]]} if p in predictions else {})}
             for p in new]
    for start in range(0, len(tasks), 500):
        api("POST", f"/api/projects/{project}/import", tasks[start:start + 500])
    return len(tasks)


# ----------------------------------------------------------------------------- predictions from runs

def _pct(v: float, size: float) -> float:
    return 100.0 * v / size


def detect_run_predictions(run_dir: Path, min_score: float) -> dict[Path, dict]:
    """{image: prediction} from a detect run's predictions/<split>.json on split/<split>.json's images."""
    from data_tools.detection.dataset import load_dataset

    files = sorted((run_dir / "predictions").glob("*.json"))
    if not files:
        raise HackathonError(f"{run_dir} has no predictions/<split>.json.",
                             fix=f"Finish the run's infer stage: hackathon run detect --run-dir {run_dir} --only infer")
    out = {}
    for pred_file in files:
        ds = load_dataset(run_dir / "split" / f"{pred_file.stem}.json")
        by_id = {im.id: (im, []) for im in ds.images}
        for d in read_json(pred_file) or []:
            if d["image_id"] in by_id and float(d["score"]) >= min_score:
                by_id[d["image_id"]][1].append(d)
        for im, dets in by_id.values():
            result = [{"from_name": "label", "to_name": "image", "type": "rectanglelabels", "score": float(d["score"]),
                       "original_width": im.width, "original_height": im.height, "image_rotation": 0,
                       "value": {"x": _pct(d["bbox"][0], im.width), "y": _pct(d["bbox"][1], im.height),
                                 "width": _pct(d["bbox"][2], im.width), "height": _pct(d["bbox"][3], im.height),
                                 "rotation": 0, "rectanglelabels": [ds.classes[int(d["category_id"]) - 1]]}}
                      for d in sorted(dets, key=lambda d: -d["score"])]
            score = sum(r["score"] for r in result) / len(result) if result else 0.0  # no face found: least sure
            out[im.path.resolve()] = {"result": result, "score": round(score, 4), "model_version": run_dir.name,
                                      "sha256": im.sha256}
    return out


def asr_run_predictions(run_dir: Path) -> dict[Path, dict]:
    """{clip: prediction} from an asr run's predictions.jsonl (score = 1 - CER against its reference)."""
    path = run_dir / "predictions.jsonl"
    if not path.is_file():
        raise HackathonError(f"{path} not found.", fix=f"Finish the run's evaluate stage: hackathon run asr --run-dir {run_dir}")
    out = {}
    for row in read_jsonl(path):
        if row.get("pred_text") is None:
            continue
        score = max(0.0, 1.0 - float(row.get("cer") or 0.0)) if row.get("text") else 0.5
        out[Path(row["audio_filepath"]).resolve()] = {
            "result": [{"from_name": "transcription", "to_name": "audio", "type": "textarea",
                        "value": {"text": [row["pred_text"]]}}], "score": round(score, 4), "model_version": run_dir.name}
    return out


def import_run(api: Api, ids: dict[str, int], run_dir: Path, min_score: float = DEFAULT_MIN_SCORE, echo=print) -> dict:
    """Pre-label from a run: predictions for the tasks showing the run's files (same path, or for images the
    same bytes), new tasks (least sure first) for the rest. Returns counts."""
    run_dir = run_dir.resolve()
    task_name = (read_json(run_dir / "meta.json") or {}).get("task") or ("detect" if (run_dir / "predictions").is_dir() else "asr")
    kind = "detection" if task_name == "detect" else "transcription"
    preds = detect_run_predictions(run_dir, min_score) if kind == "detection" else asr_run_predictions(run_dir)
    project, key = ids[kind], PROJECTS[kind]["key"]
    have = task_files(api, project, key)
    by_sha = {}
    if kind == "detection" and any(p not in have for p in preds):
        by_sha = {file_sha256(p): t for p, t in have.items() if p.is_file()}
    by_stem = Counter(p.stem for p in have)
    matched, fresh = {}, {}
    for path, pred in preds.items():
        task = have.get(path) or by_sha.get(pred.pop("sha256", None) or "")
        stem = path.stem.rsplit("__", 1)[-1]  # prepare-audio names clips <folder>__<stem>.wav
        if task is None and kind == "transcription" and by_stem[stem] == 1:
            task = next(t for p, t in have.items() if p.stem == stem)
        (matched.__setitem__(task["id"], pred) if task else fresh.__setitem__(path, pred))
    skipped = 0
    for task_id, pred in sorted(matched.items(), key=lambda kv: kv[1]["score"]):
        if any(p.get("model_version") == pred["model_version"] for p in api("GET", "/api/predictions", task=task_id)):
            skipped += 1
            continue
        api("POST", "/api/predictions", {"task": task_id, **pred})
    made = add_files(api, project, kind, [], fresh)
    api("PATCH", f"/api/projects/{project}", {"model_version": run_dir.name})
    counts = {"project": kind, "predictions": len(matched) - skipped + made, "already_there": skipped, "new_tasks": made}
    echo(f"{run_dir.name}: {counts['predictions']} predictions -> {kind} ({made} new tasks, {skipped} already there)")
    return counts


# ----------------------------------------------------------------------------- export, status

def export(api: Api, ids: dict[str, int], out: Path, echo=print) -> dict[str, Path]:
    """OUT/<project>.label-studio.json (Label Studio's JSON export) + OUT/label-studio-export.json."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_MARK).exists():
        raise HackathonError(f"{out} holds files that are not an earlier `label studio --export`; not writing there.",
                             fix="Pass --export with a new or empty folder.")
    written, counts = {}, {}
    for kind, project in ids.items():
        tasks = api("GET", f"/api/projects/{project}/export", exportType="JSON", download_all_tasks="true")
        written[kind] = atomic_write_json(out / f"{kind}.label-studio.json", tasks)
        counts[kind] = {"tasks": len(tasks), "annotations": sum(len(t.get("annotations") or []) for t in tasks)}
    atomic_write_json(out / EXPORT_MARK, {"server": api.url, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                          "document_root": "/", "projects": {k: {"id": ids[k], **counts[k]} for k in ids}})
    done = ", ".join(f"{k}: {c['annotations']} annotations of {c['tasks']} tasks" for k, c in counts.items())
    echo(f"exported {done} -> {out} (hackathon run detect|asr data.source={out})")
    return written


def status(api: Api, ids: dict[str, int]) -> dict:
    """Per project: tasks, labelled, skipped; annotations per class (detection boxes) and per person."""
    users = {u["id"]: u.get("email") or u.get("username") for u in api("GET", "/api/users")}
    out = {}
    for kind, project in ids.items():
        tasks = api("GET", f"/api/projects/{project}/export", exportType="JSON", download_all_tasks="true")
        per_class, per_person, skipped, labelled = Counter(), Counter(), 0, 0
        for t in tasks:
            ann, problem, _ = ls.pick_annotation(t)
            labelled += ann is not None
            skipped += problem == "skipped_task"
            for a in t.get("annotations") or []:
                who = a.get("completed_by")
                who = who.get("email") if isinstance(who, dict) else users.get(who, str(who))
                per_person[f"{who} (skipped)" if a.get("was_cancelled") else who] += 1
            for r in (ann or {}).get("result", []):
                for label in (r.get("value") or {}).get("rectanglelabels", []):
                    per_class[label] += 1
        out[kind] = {"project": project, "tasks": len(tasks), "labelled": labelled, "skipped": skipped,
                     "per_class": dict(per_class), "per_person": dict(per_person)}
    try:
        out["invite_url"] = api.url + api("GET", "/api/invite")["invite_url"]
    except (HackathonError, KeyError, TypeError):
        pass
    return out


def format_status(st: dict) -> str:
    lines = []
    for kind in PROJECTS:
        s = st[kind]
        lines.append(f"{kind} (project {s['project']}): {s['labelled']}/{s['tasks']} tasks labelled, {s['skipped']} skipped")
        if kind == "detection":
            lines.append("  boxes per class: " + ", ".join(f"{c} {s['per_class'].get(c, 0)}" for c in
                                                           [*CANONICAL_CLASSES, *sorted(set(s["per_class"]) - set(CANONICAL_CLASSES))]))
        lines.append("  annotations per person: " + (", ".join(f"{p} {n}" for p, n in sorted(s["per_person"].items())) or "none"))
    if st.get("invite_url"):
        lines.append(f"new member: open {st['invite_url']} (sign-up works only through this link)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the command

def studio_command(port: int, host: str, images: list[Path], audio: list[Path], from_runs: list[Path],
                   export_to: Path | None, show_status: bool, setup: bool, min_score: float = DEFAULT_MIN_SCORE,
                   echo=print) -> None:
    """`hackathon label studio`: set up, then either do the one-shot jobs (--from-run/--export/--status: on
    the running server, or on one started for them) or, with none, serve until Ctrl-C / SIGTERM."""
    from hackathon.label import server

    if setup:
        echo(f"Label Studio ready: {server.ensure_venv(echo)}")
    one_shot = bool(from_runs or export_to or show_status or ((images or audio) and server.running_url()))

    def prepare(url: str) -> dict[str, int]:
        api = Api(url, server.admin()[2])
        ids = ensure_projects(api)
        made = {kind: add_files(api, ids[kind], kind, [Path(f) for f in folders])
                for kind, folders in (("detection", images), ("transcription", audio)) if folders}
        for kind, n in made.items():
            echo(f"{kind}: {n} new tasks")
        for run in from_runs:
            import_run(api, ids, Path(run), min_score, echo)
        if export_to:
            export(api, ids, export_to, echo)
        if show_status:
            echo(format_status(status(api, ids)))
        return ids

    if one_shot:
        with server.connect(host, port, echo) as url:
            prepare(url)
    elif not setup or images or audio:
        server.serve_forever(host, port, prepare, echo)
