"""Progress reporting: human lines on a terminal, or JSON events, or nothing.

Features report steps to a `Monitor`; they never print directly, so the same
code serves an interactive terminal, `--json` output and tests.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO

from dtk import textfit


class Monitor(Protocol):
    def step(self, message: str) -> None: ...

    def detail(self, line: str) -> None: ...

    def event(self, kind: str, **data: Any) -> None: ...


class NullMonitor:
    def step(self, message: str) -> None:
        pass

    def detail(self, line: str) -> None:
        pass

    def event(self, kind: str, **data: Any) -> None:
        pass


class TextMonitor:
    """Steps with elapsed time on stderr; on a TTY the latest tool line is shown
    in place so a long apt or compiler run visibly moves without flooding."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.start = time.monotonic()
        self.live = stream.isatty()
        self._dirty = False

    def _clear(self) -> None:
        if self._dirty:
            self.stream.write("\r\033[K")
            self._dirty = False

    def step(self, message: str) -> None:
        """The message after the time it came at, wrapped to the terminal under itself."""
        self._clear()
        stamp = f"[{time.monotonic() - self.start:6.1f}s] "
        first, *rest = textfit.wrap(message, textfit.width() - len(stamp))
        self.stream.write(stamp + first + "\n"
                          + "".join(" " * len(stamp) + line + "\n" for line in rest))
        self.stream.flush()

    def detail(self, line: str) -> None:
        if not self.live or not line.strip():
            return
        # One line, redrawn in place: it must never wrap, or the redraw leaves it behind.
        width = min(100, textfit.width() - 5)
        self.stream.write("\r\033[K    " + textfit.elide(line.strip(), width))
        self.stream.flush()
        self._dirty = True

    def event(self, kind: str, **data: Any) -> None:
        pass


class JsonMonitor:
    """One JSON object per line on stderr, for machines watching a long run."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.start = time.monotonic()

    def _emit(self, payload: dict[str, Any]) -> None:
        payload["t"] = round(time.monotonic() - self.start, 3)
        self.stream.write(json.dumps(payload) + "\n")
        self.stream.flush()

    def step(self, message: str) -> None:
        self._emit({"kind": "step", "message": message})

    def detail(self, line: str) -> None:
        pass

    def event(self, kind: str, **data: Any) -> None:
        self._emit({"kind": kind, **data})
