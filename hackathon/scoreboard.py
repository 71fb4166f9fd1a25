"""The team scoreboard: the best run per task by the competition's metric, and who made it.

ASR: `cer`, lowest wins. TTS: `dnsmos_ovrl` highest, ties broken by `pesq_wb` highest.
Detection: `map50` (mAP@.5) highest. Metrics come from each run's metrics.json as recorded in the registry.
"""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hackathon.core.atomic import atomic_write_text
from hackathon.core.init_weights import summary as weights_summary
from hackathon.core.paths import TASKS
from hackathon.core.registry import backend_comparison, list_runs, metric_number as _number


@dataclass(frozen=True)
class Criterion:
    key: str  # metrics.json key
    higher_is_better: bool


# Ordered: the first criterion decides, later ones break ties.
COMPETITION_METRICS: dict[str, tuple[Criterion, ...]] = {
    "asr": (Criterion("cer", higher_is_better=False),),
    "tts": (Criterion("dnsmos_ovrl", higher_is_better=True), Criterion("pesq_wb", higher_is_better=True)),
    "detect": (Criterion("map50", higher_is_better=True),),
}


def _rank_key(run: dict, criteria: tuple[Criterion, ...]) -> tuple:
    """Smaller is better; a missing tie-break metric sorts after any present one."""
    key = []
    for c in criteria:
        v = _number(run["metrics"].get(c.key))
        key.append((v is None, 0.0 if v is None else (-v if c.higher_is_better else v)))
    return tuple(key)


def best_runs(runs: list[dict] | None = None) -> list[dict]:
    """One entry per task: the best scored run (or None) with its metrics and who made it."""
    runs = list_runs() if runs is None else runs
    board = []
    for task in TASKS:
        criteria = COMPETITION_METRICS[task]
        scored = [r for r in runs if r["task"] == task and _number(r["metrics"].get(criteria[0].key)) is not None]
        best = min(scored, key=lambda r: _rank_key(r, criteria)) if scored else None
        board.append({
            "task": task,
            "metric": criteria[0].key,
            "better": "higher" if criteria[0].higher_is_better else "lower",
            "tie_break": [c.key for c in criteria[1:]],
            "scored_runs": len(scored),
            "best": None if best is None else {
                "user": best["user"], "run_dir": best["run_dir"], "status": best["status"],
                "ended": best["ended"], "value": best["metrics"][criteria[0].key],
                "metrics": best["metrics"]},
        })
    return board


def print_backend_comparison(console, runs: list[dict] | None = None) -> list[dict]:
    from rich.table import Table

    rows = backend_comparison(runs)
    if rows:
        table = Table(title="ASR backends on the same data (best CER each; lower is better)")
        columns = list(dict.fromkeys(k for r in rows for k in r))
        for col in columns:
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(*(_short(r.get(c, "-")) for c in columns))
        console.print(table)
    return rows


# Shown first after the ranking metrics: what a teammate looks at next.
SECONDARY_METRICS = {"asr": ("wer",), "tts": ("asr_cer", "dnsmos_sig", "dnsmos_bak"), "detect": ("map", "map75")}
MAX_OTHER_METRICS = 4  # the table stays readable; --json and the report have them all


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _headline(row: dict) -> str:
    best = row["best"]
    keys = [row["metric"], *row["tie_break"]]
    return " ".join(f"{k}={_fmt(best['metrics'][k])}" for k in keys if k in best["metrics"])


WIDE_CONSOLE = 120  # narrower: one line per task instead of a table whose cells wrap into ~40 lines


def _other_metrics(row: dict, limit: int = MAX_OTHER_METRICS) -> str:
    best = row["best"]
    shown = {row["metric"], *row["tie_break"]}
    first = [k for k in SECONDARY_METRICS.get(row["task"], ()) if k in best["metrics"]]
    ordered = first + sorted(k for k in best["metrics"] if k not in first)
    numbers = [f"{k}={_short(best['metrics'][k])}" for k in ordered
               if k not in shown and _number(best["metrics"][k]) is not None]
    return ", ".join(numbers[:limit]) + (f" (+{len(numbers) - limit} in --json)" if len(numbers) > limit else "")


def print_scoreboard_lines(console, board: list[dict]) -> None:
    """The scoreboard for an 80-column terminal: a line per task (headline, who, how many runs, where), the
    next metrics indented below it."""
    from hackathon.core.registry import short_run_dir

    console.print("Team scoreboard: best run per task (all metrics: hackathon score --json)", highlight=False)
    for row in board:
        best = row["best"]
        if best is None:
            console.print(f"  {row['task']:<7} no scored run", highlight=False, markup=False)
            continue
        console.print(f"  {row['task']:<7} {_headline(row)}  by {best['user'] or '-'}, {row['scored_runs']} scored "
                      f"run(s): {short_run_dir(best['run_dir'])}", highlight=False, markup=False, soft_wrap=True)
        if others := _other_metrics(row, limit=3):
            console.print(f"          {others}", highlight=False, markup=False, soft_wrap=True)
        if weights := weights_summary(best["metrics"].get("init")):
            console.print(f"          weights: {weights}", highlight=False, markup=False, soft_wrap=True)


def print_scoreboard(console) -> list[dict]:
    board = best_runs()
    if console.width < WIDE_CONSOLE:
        print_scoreboard_lines(console, board)
    else:
        print_scoreboard_table(console, board)
    print_backend_comparison(console)
    return board


def print_scoreboard_table(console, board: list[dict]) -> None:
    from rich.table import Table

    from hackathon.core.registry import short_run_dir

    table = Table(title="Team scoreboard: best run per task")
    for col in ("task", "ranked by", "best", "by", "other metrics", "weights from", "runs", "run"):
        table.add_column(col, overflow="fold")
    for row in board:
        ranked_by = ", ".join(f"{k} {'↑' if c.higher_is_better else '↓'}" for k, c in
                              ((c.key, c) for c in COMPETITION_METRICS[row["task"]]))
        best = row["best"]
        if best is None:
            table.add_row(row["task"], ranked_by, "no scored run", "-", "-", "-", "0", "-")
            continue
        table.add_row(row["task"], ranked_by, _headline(row), best["user"] or "-", _other_metrics(row) or "-",
                      weights_summary(best["metrics"].get("init")) or "-", str(row["scored_runs"]),
                      short_run_dir(best["run_dir"]))
    console.print(table)


# ----------------------------------------------------------------------------- index.html

def _link(index_dir: Path, run_dir: str) -> str | None:
    report = Path(run_dir) / "report.html"
    if not report.exists():
        return None
    return Path(os.path.relpath(report, index_dir)).as_posix()


def write_index_html(path: str | os.PathLike) -> Path:
    """`hackathon score --html PATH`: the scoreboard plus every run, each linking its report.html."""
    path = Path(path)
    index_dir = path.resolve().parent
    runs = list_runs()
    board = best_runs(runs)
    e = html.escape

    def report_cell(run_dir: str) -> str:
        href = _link(index_dir, run_dir)
        return f'<a href="{e(href)}">report</a>' if href else "<i>no report</i>"

    best_rows = []
    for row in board:
        best = row["best"]
        if best is None:
            best_rows.append(f"<tr><td>{e(row['task'])}</td><td colspan=4>no scored run yet</td></tr>")
            continue
        best_rows.append(f"<tr><td>{e(row['task'])}</td><td><b>{e(_headline(row))}</b> ({row['better']} is better)</td>"
                         f"<td>{e(best['user'] or '-')}</td><td>{e(best['run_dir'])}</td>"
                         f"<td>{report_cell(best['run_dir'])}</td></tr>")
    run_rows = []
    for r in runs:
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(r["metrics"].items()) if _number(v) is not None)
        run_rows.append(f"<tr><td>{e(r['task'])}</td><td>{e(r['user'] or '-')}</td><td>{e(r['status'] or '-')}</td>"
                        f"<td>{e(r['started'] or '-')}</td><td>{e(metrics or '-')}</td>"
                        f"<td>{e(weights_summary(r['metrics'].get('init')) or '-')}</td><td>{e(r['run_dir'])}</td>"
                        f"<td>{report_cell(r['run_dir'])}</td></tr>")
    comparison = backend_comparison(runs)
    comparison_html = ""
    if comparison:
        columns = list(dict.fromkeys(k for r in comparison for k in r))
        comparison_html = ("<h2>ASR backends on the same data</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in columns)
                           + "</tr>" + "".join("<tr>" + "".join(f"<td>{e(_short(r.get(c, '-')))}</td>" for c in columns)
                                               + "</tr>" for r in comparison) + "</table>")
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hackathon scoreboard</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:2em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}} th{{background:#eee}}</style></head>
<body><h1>Team scoreboard</h1><p>Written {e(time.strftime('%Y-%m-%d %H:%M:%S'))}.
ASR: CER (lower is better); TTS: DNSMOS OVRL then PESQ-WB (higher); detection: mAP@.5 (higher).</p>
<table><tr><th>task</th><th>best score</th><th>by</th><th>run dir</th><th>report</th></tr>
{''.join(best_rows)}</table>
{comparison_html}
<h2>All runs ({len(runs)})</h2>
<table><tr><th>task</th><th>user</th><th>status</th><th>started</th><th>metrics</th><th>weights from</th><th>run dir</th>
<th>report</th></tr>
{''.join(run_rows)}</table></body></html>
"""
    atomic_write_text(path, page)
    return path


def score(console, as_json: bool = False, html_path: str | os.PathLike | None = None) -> list[dict]:
    """`hackathon score`: print the scoreboard (table or JSON); optionally write the HTML index."""
    if html_path is not None:
        written = write_index_html(html_path)
        if not as_json:
            console.print(f"index written: {written}")
    if as_json:
        board = best_runs()
        print(json.dumps(board, indent=2, default=str))
        return board
    return print_scoreboard(console)
