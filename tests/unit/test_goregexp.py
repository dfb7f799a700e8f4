"""Which RE2 evaluates KMM's kernelMappings regexps, and what a machine without one is
told. (dtk's own binding, built by `make deb`, is held to google-re2's answers in
tests/integration/test_deb.py.)"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from dtk.errors import DtkError
from dtk.kmmapi import goregexp


@pytest.fixture
def fresh_engine() -> Iterator[None]:
    goregexp.engine.cache_clear()
    yield
    goregexp.engine.cache_clear()


def test_google_re2_where_pip_installed_it(fresh_engine: None) -> None:
    assert goregexp.engine().name == "google-re2"
    assert goregexp.compile_regexp(r"^6\.1\.0-\d+-amd64$").search("6.1.0-47-amd64")
    with pytest.raises(goregexp.RegexpError, match=r"invalid escape sequence: \\1"):
        goregexp.compile_regexp(r"(a)\1")  # Python's re would take it


def test_no_engine_is_one_screen_with_the_fix(fresh_engine: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither binding importable (None in sys.modules makes an import fail)."""
    monkeypatch.setitem(sys.modules, "re2", None)
    monkeypatch.setitem(sys.modules, "dtk.kmmapi._re2", None)
    with pytest.raises(DtkError, match="no RE2 engine") as caught:
        goregexp.compile_regexp("x")
    assert "make deb" in str(caught.value.hint) and "google-re2" in str(caught.value.hint)
