"""The one error type users see: what went wrong (naming the file/field) and what to do about it."""

from __future__ import annotations


class HackathonError(Exception):
    """An error with a fix. The CLI prints `message` and `Fix: fix` and exits non-zero."""

    def __init__(self, message: str, fix: str | None = None, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message}\nFix: {self.fix}" if self.fix else self.message
