"""Human text fitted to the terminal (issue 28 §10): table cells cut in the middle,
never through what tells two rows apart; long lines wrapped at spaces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtk import textfit
from dtk.cli.common import print_table

IMAGE = "registry.example.com/" + "very-long-project/" * 3 + "kmm-ci:"


def test_two_rows_stay_apart_when_their_tags_differ_at_the_end(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The tour's `module build` table: both rows read "…kmm-ci:6.12.1…" once the
    IMAGE column was cut from the end."""
    monkeypatch.setenv("COLUMNS", "100")
    kernels = ["6.12.118+deb12-amd64", "6.12.118+deb12-rt-amd64"]
    rows = [[k, IMAGE + k.replace("+", "_"), "built", "-", "-", "31.0s"] for k in kernels]
    print_table(["KERNEL", "IMAGE", "ACTION", "PUSHED", "ALREADY THERE", "TIME"], rows)
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100
    images = [line.split()[1] for line in lines[2:]]
    assert "…" in images[0] and images[0] != images[1]
    assert images[0].endswith("deb12-amd64") and images[1].endswith("deb12-rt-amd64")


_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)


@given(prefix=_TEXT, suffix=_TEXT, middles=st.lists(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=3, max_size=3),
    min_size=2, max_size=6, unique=True), limit=st.integers(8, 80))
def test_a_column_keeps_what_differs(prefix: str, suffix: str, middles: list[str],
                                     limit: int) -> None:
    """Values alike but for a part of equal width: each fits, and all stay distinct."""
    values = [prefix + m + suffix for m in middles]
    cut = textfit.fit_column(values, limit)
    assert all(len(c) <= limit for c in cut)
    assert len(set(cut)) == len(values)
    assert all(c == v for c, v in zip(cut, values, strict=True) if len(v) <= limit)


@given(values=st.lists(st.text(max_size=200), max_size=8), limit=st.integers(1, 150))
def test_a_column_always_fits(values: list[str], limit: int) -> None:
    assert all(len(c) <= limit for c in textfit.fit_column(values, limit))


@given(words=st.lists(st.text(st.characters(min_codepoint=33, max_codepoint=126),
                              min_size=1, max_size=150), max_size=30),
       limit=st.integers(20, 160), lead=st.integers(0, 4))
def test_a_wrapped_line_fits(words: list[str], limit: int, lead: int) -> None:
    text = " " * lead + " ".join(words)
    lines = textfit.wrap(text, limit)
    assert all(len(line) <= limit for line in lines)
    if all(len(w) <= limit - lead - 4 for w in words):  # no word had to be cut
        assert " ".join(" ".join(lines).split()) == " ".join(words)


def test_a_command_wraps_so_that_it_still_pastes() -> None:
    line = "  command: skopeo copy " + " ".join(f"--flag-{i}=value-{i}" for i in range(20))
    lines = textfit.wrap(line, 60)
    assert len(lines) > 1 and all(len(x) <= 60 for x in lines)
    assert all(x.endswith(" \\") for x in lines[:-1])
