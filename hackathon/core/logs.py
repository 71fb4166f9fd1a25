"""Logging for runs: a file per run under <run-dir>/logs/, with registered secrets redacted everywhere."""

from __future__ import annotations

import logging
from pathlib import Path

_SECRETS: set[str] = set()
REDACTED = "****"


def register_secret(value: str | None) -> None:
    """Never let `value` reach a log line (the NGC API key)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for s in _SECRETS:
        text = text.replace(s, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = ()
        return True


def get_logger(name: str = "hackathon") -> logging.Logger:
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger


def attach_run_log(run_dir: Path) -> logging.Handler:
    """Send hackathon.* records to <run-dir>/logs/run.log (appended: a resumed run keeps its history)."""
    log_dir = Path(run_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("hackathon")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def detach_run_log(handler: logging.Handler) -> None:
    logging.getLogger("hackathon").removeHandler(handler)
    handler.close()
