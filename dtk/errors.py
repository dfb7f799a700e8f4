"""User-facing errors.

A `DtkError` is a problem the user can fix (bad input, a missing tool, an
unreachable mirror). The CLI prints it on one screen without a traceback;
anything else escaping is a bug in dtk and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class DtkError(Exception):
    """An error with a message for the user and, when known, how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


class ProblemsError(DtkError):
    """Several problems in the user's input, each also as a record for --json
    (e.g. {file, document, item, path, message} for manifests)."""

    def __init__(self, message: str, problems: list[dict[str, Any]],
                 hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems


def die(message: str, hint: str | None = None) -> DtkError:
    """Build a DtkError to `raise` (named after mkosi's helper, which reads well at call sites)."""
    return DtkError(message, hint)
