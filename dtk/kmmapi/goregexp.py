"""KMM's kernelMappings regexps, evaluated as KMM evaluates them: Go's regexp package,
that is RE2's syntax (no backreferences, no lookaround) and an unanchored search of the
kernel release.

RE2 itself evaluates them, through one of two bindings of the same C++ library:
google-re2 (PyPI: what `pip install` brings, with its own copy of RE2), else dtk's own
(`dtk.kmmapi._re2`, built by `make deb` against Debian's libre2, because Debian 12 has
libre2 but no Python binding of it). Python's `re` is never a stand-in: its syntax means
other things (`[[:alpha:]]`, `\\Z`, `$` before a final newline, backreferences and
lookaround accepted), so a Module could pick another image on a host than in the cluster.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any, Protocol

from dtk.errors import DtkError


class RegexpError(ValueError):
    """RE2 refuses the pattern; the message is RE2's reason (as Go's would be)."""


class Regexp(Protocol):
    def search(self, text: str) -> bool: ...


class Engine(Protocol):
    name: str

    def compile(self, pattern: str) -> Regexp: ...


class _GoogleRegexp:
    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled

    def search(self, text: str) -> bool:
        return self._compiled.search(text) is not None


class GoogleRE2:
    """google-re2 (`import re2`)."""

    name = "google-re2"

    def __init__(self, module: ModuleType) -> None:
        self._re2 = module

    def compile(self, pattern: str) -> Regexp:
        options = self._re2.Options()
        options.log_errors = False  # RE2 would print its own line on stderr
        try:
            return _GoogleRegexp(self._re2.compile(pattern, options))
        except self._re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            raise RegexpError(reason.decode() if isinstance(reason, bytes)
                              else str(reason)) from None


class Binding:
    """dtk's binding (`dtk.kmmapi._re2`): one class, Regexp(pattern), raising ValueError
    with RE2's reason, whose search(text) is RE2::PartialMatch."""

    name = "dtk-re2"

    def __init__(self, module: ModuleType) -> None:
        self._re2 = module

    def compile(self, pattern: str) -> Regexp:
        try:
            compiled: Regexp = self._re2.Regexp(pattern)
        except ValueError as exc:
            raise RegexpError(str(exc)) from None
        return compiled


@functools.cache
def engine() -> Engine:
    """google-re2 where pip installed it, else dtk's own binding (the Debian package)."""
    try:
        return GoogleRE2(importlib.import_module("re2"))
    except ImportError:
        pass
    try:
        return Binding(importlib.import_module("dtk.kmmapi._re2"))
    except ImportError:
        raise DtkError("no RE2 engine for KMM's kernelMappings regexps",
                       hint="install dtk's Debian package (make deb), or google-re2 "
                            "(pip install google-re2)") from None


def compile_regexp(pattern: str) -> Regexp:
    """Compile with RE2, Go's regexp syntax; RegexpError says why RE2 refuses it."""
    return engine().compile(pattern)
