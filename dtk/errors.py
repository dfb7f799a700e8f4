"""User-facing errors.

A `DtkError` is a problem the user can fix (bad input, a missing tool, an
unreachable mirror). The CLI prints it on one screen without a traceback;
anything else escaping is a bug in dtk and keeps its traceback.
"""

from __future__ import annotations


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


def die(message: str, hint: str | None = None) -> DtkError:
    """Build a DtkError to `raise` (named after mkosi's helper, which reads well at call sites)."""
    return DtkError(message, hint)
