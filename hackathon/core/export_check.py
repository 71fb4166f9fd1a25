"""The export stages' parity record, one shape for every task: export/export_check.json + a few flat
metrics + a report table.

export_check.json: {task, framework, runtime, n_inputs, max_abs_diff: {name: float}, agreement: {name:
"k/n"}, tolerances, passed, items: [...per input...]}. The metrics use `<task>_export_` keys, so the
scoreboard and report show them next to the task's scores.
"""

from __future__ import annotations

from pathlib import Path

from hackathon.core.atomic import atomic_write_json

CHECK_NAME = "export_check.json"


def write_check(export_dir: str | Path, check: dict) -> Path:
    return atomic_write_json(Path(export_dir) / CHECK_NAME, check)


def record_check(ctx, check: dict, metrics: dict) -> None:
    """metrics.json keys + one 'Export parity' table in report_assets.json (replaced on a re-run)."""
    from hackathon.core.report import add_report_assets

    ctx.write_metrics(metrics)
    rows = [{"measure": f"max |{check['framework']} - onnxruntime| {name}", "value": value}
            for name, value in check.get("max_abs_diff", {}).items()]
    rows += [{"measure": f"agreement: {name}", "value": value} for name, value in check.get("agreement", {}).items()]
    rows += [{"measure": f"tolerance: {name}", "value": value} for name, value in check.get("tolerances", {}).items()]
    rows += [{"measure": note, "value": ""} for note in check.get("notes", [])]
    rows.append({"measure": "passed", "value": check.get("passed")})
    add_report_assets(ctx.run_dir, tables=[{"title": f"Export parity: {check['framework']} vs ONNX Runtime "
                                                      f"({check.get('n_inputs', 0)} demo inputs)", "rows": rows}],
                      stage="export_check")


def agreement(k: int, n: int) -> str:
    return f"{k}/{n}"


def sig(value: float, digits: int = 3) -> float:
    """`value` to `digits` significant digits (3.7e-08 stays 3.7e-08, where round(x, 7) would say 0)."""
    return float(f"{float(value):.{digits}g}")
