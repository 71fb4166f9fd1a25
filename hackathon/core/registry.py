"""The team's run registry: one SQLite table of every run (who, what, where, status, metrics).

Many processes write it at once (every `hackathon run` at start and end), so: WAL journal (readers never
block the writer), a busy timeout, every write in a BEGIN IMMEDIATE transaction (takes the write lock
up front, so two writers can't deadlock upgrading a read lock), and a retry loop on "database is locked".
Keep the file on local disk: SQLite's WAL mode does not work over NFS.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from hackathon.core.errors import HackathonError
from hackathon.core.logs import get_logger
from hackathon.core.paths import runs_root

log = get_logger("hackathon.registry")

BUSY_TIMEOUT_MS = 30_000
RETRIES = 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_dir TEXT PRIMARY KEY,          -- absolute path: one row per run directory (a resumed run updates it)
    task TEXT NOT NULL,
    user TEXT,
    host TEXT,
    config_hash TEXT,
    data_fingerprint TEXT,
    status TEXT,                       -- queued | running | done | failed | interrupted
    started TEXT,
    ended TEXT,
    metrics TEXT,                      -- metrics.json as JSON text
    gpus TEXT,                         -- JSON list of the lock keys the run held
    error TEXT,
    updated REAL                       -- unix time of the last write
);
CREATE INDEX IF NOT EXISTS runs_task ON runs(task);
CREATE INDEX IF NOT EXISTS runs_user ON runs(user);
"""

COLUMNS = ("run_dir", "task", "user", "host", "config_hash", "data_fingerprint", "status", "started", "ended",
           "metrics", "gpus", "error", "updated")


def registry_path() -> Path:
    """HACKATHON_REGISTRY, default <runs root>/registry.sqlite."""
    return Path(os.environ.get("HACKATHON_REGISTRY", runs_root() / "registry.sqlite"))


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _registry_error(path: Path, exc: Exception) -> HackathonError:
    return HackathonError(f"Cannot use the run registry {path}: {exc}",
                          fix="Check that the file and its directory are writable by you (the team's group) and on "
                              "local disk (not NFS), or point HACKATHON_REGISTRY at another file.")


def connect(path: str | os.PathLike | None = None) -> sqlite3.Connection:
    path = Path(path) if path else registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        _retry(lambda: conn.executescript(SCHEMA))
    except (OSError, sqlite3.Error) as exc:
        raise _registry_error(path, exc) from exc
    if new:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o664)  # the team shares it; SQLite gives the -wal/-shm files the same mode
    return conn


def _retry(fn):
    """Run fn, retrying with jittered back-off while another process holds the write lock."""
    for attempt in range(RETRIES):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or attempt == RETRIES - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.5))


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    _retry(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    _retry(lambda: conn.execute("COMMIT"))


def upsert_run(row: dict, path: str | os.PathLike | None = None) -> None:
    """Insert or update the row for row['run_dir']; keys not given keep their stored value."""
    row = {k: v for k, v in row.items() if k in COLUMNS}
    for key in ("metrics", "gpus"):
        if key in row and not isinstance(row[key], (str, type(None))):
            row[key] = json.dumps(row[key], sort_keys=True)
    row["updated"] = time.time()
    cols = list(row)
    updates = ", ".join(f"{c}=excluded.{c}" for c in cols if c != "run_dir")
    sql = (f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
           f"ON CONFLICT(run_dir) DO UPDATE SET {updates}")
    conn = connect(path)
    try:
        with _write_transaction(conn):
            conn.execute(sql, [row[c] for c in cols])
    except sqlite3.Error as exc:
        raise _registry_error(Path(path) if path else registry_path(), exc) from exc
    finally:
        conn.close()


def _row_dict(r: sqlite3.Row) -> dict:
    d = dict(r)
    for key in ("metrics", "gpus"):
        try:
            d[key] = json.loads(d[key]) if d.get(key) else ({} if key == "metrics" else [])
        except ValueError:
            d[key] = {} if key == "metrics" else []
    return d


def list_runs(task: str | None = None, user: str | None = None, path: str | os.PathLike | None = None) -> list[dict]:
    """Rows, newest first, filtered by task and/or user."""
    where, args = [], []
    if task:
        where.append("task = ?")
        args.append(task)
    if user:
        where.append("user = ?")
        args.append(user)
    sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY started DESC, updated DESC"
    conn = connect(path)
    try:
        return [_row_dict(r) for r in _retry(lambda: conn.execute(sql, args).fetchall())]
    except sqlite3.Error as exc:
        raise _registry_error(Path(path) if path else registry_path(), exc) from exc
    finally:
        conn.close()


# ----------------------------------------------------------------------------- the runner's calls

def _row_from_context(ctx, **extra: Any) -> dict:
    meta = ctx.meta
    return {"run_dir": str(ctx.run_dir), "task": ctx.task, "user": meta.get("user"), "host": meta.get("host"),
            "config_hash": meta.get("config_hash"), "data_fingerprint": meta.get("data_fingerprint"),
            "status": meta.get("status"), "gpus": meta.get("gpu_locks", []), **extra}


def record_run_start(ctx) -> None:
    """At start: the row exists (status queued/running) even if the process is later killed -9."""
    upsert_run(_row_from_context(ctx, started=time.strftime("%Y-%m-%dT%H:%M:%S"), ended=None, error=None))


def record_run_status(ctx) -> None:
    upsert_run(_row_from_context(ctx))


def record_run_end(ctx, error: BaseException | None = None) -> None:
    """At the end (also on failure): status, end time and the metrics read back from metrics.json."""
    metrics = {}
    metrics_file = Path(ctx.run_dir) / "metrics.json"
    if metrics_file.exists():
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("metrics.json in %s is not valid JSON; registering the run without metrics", ctx.run_dir)
    message = (str(error).splitlines()[0][:500] if str(error) else type(error).__name__) if error else None
    upsert_run(_row_from_context(ctx, ended=ctx.meta.get("finished") or time.strftime("%Y-%m-%dT%H:%M:%S"),
                                 metrics=metrics, error=message))


def show_runs(console, task: str | None = None, user: str | None = None, as_json: bool = False) -> list[dict]:
    """`hackathon runs`: the registry as a table (newest first)."""
    rows = list_runs(task, user)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return rows
    from rich.table import Table

    table = Table(title=f"Runs ({registry_path()})")
    show_gpus = any(r["gpus"] for r in rows)
    for col in ("task", "user", "status", "started", "metrics", *(["gpus"] if show_gpus else []), "run"):
        table.add_column(col, overflow="fold")
    for r in rows:
        numbers = [(k, v) for k, v in sorted(r["metrics"].items()) if isinstance(v, (int, float))
                   and not isinstance(v, bool)]  # per-class dicts etc. are in the run's report
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in numbers[:6])
        table.add_row(r["task"], r["user"] or "-", r["status"] or "-", short_time(r["started"]), metrics or "-",
                      *([",".join(r["gpus"]) or "-"] if show_gpus else []), short_run_dir(r["run_dir"]))
    console.print(table)
    if not rows:
        console.print("No runs recorded yet: `hackathon run asr` records one.")
    return rows


def short_time(stamp: str | None) -> str:
    """2026-11-23T21:11:18 -> 11-23 21:11 (the year and seconds only take room)."""
    return stamp[5:16].replace("T", " ") if stamp and len(stamp) >= 16 else (stamp or "-")


def short_run_dir(run_dir: str) -> str:
    """Relative to the runs root when under it: the root is the same for the whole table."""
    try:
        return str(Path(run_dir).relative_to(runs_root().resolve()))
    except ValueError:
        return run_dir


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def metric_number(value: Any) -> float | None:
    """A metric value as a float; None for missing, non-numeric or NaN values (they never win)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value else None


# ----------------------------------------------------------------------------- ASR backends side by side

ASR_DEFAULT_BACKEND = "nemo"  # runs scored before metrics.json named its backend


def backend_comparison(runs: list[dict] | None = None, data_fingerprint: str | None = None) -> list[dict]:
    """ASR: per data fingerprint that more than one backend has scored (or only `data_fingerprint`),
    the best CER of each backend side by side: {data, <backend> cer, <backend> run, ...}."""
    runs = list_runs(task="asr") if runs is None else [r for r in runs if r["task"] == "asr"]
    best: dict[str, dict[str, dict]] = {}
    for r in runs:
        fp, cer = r.get("data_fingerprint"), metric_number(r["metrics"].get("cer"))
        if not fp or cer is None or (data_fingerprint is not None and fp != data_fingerprint):
            continue
        backend = str(r["metrics"].get("backend") or ASR_DEFAULT_BACKEND)
        held = best.setdefault(fp, {}).get(backend)
        if held is None or cer < held["cer"]:
            best[fp][backend] = {"cer": cer, "run": short_run_dir(r["run_dir"]),
                                 "zero_shot_cer": metric_number(r["metrics"].get("zero_shot_cer"))}
    rows = []
    for fp, per_backend in sorted(best.items()):
        if data_fingerprint is None and len(per_backend) < 2:
            continue
        row: dict[str, Any] = {"data": fp[:12]}
        for backend, b in sorted(per_backend.items()):
            row[f"{backend} cer"] = round(b["cer"], 4)
            if b["zero_shot_cer"] is not None:
                row[f"{backend} zero-shot cer"] = round(b["zero_shot_cer"], 4)
            row[f"{backend} run"] = b["run"]
        rows.append(row)
    return rows
