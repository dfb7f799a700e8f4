"""Tables fit the terminal (issue 17 §4): $COLUMNS, else 120 when the output is no
terminal; the widest cells give way with '…', and --json keeps them whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.cli.common import fit
from tests.unit.kmm_support import container, dtk, minimal, write


def _long_module(tmp_path: Path) -> Path:
    doc = minimal()
    for mapping in container(doc)["kernelMappings"]:
        mapping["containerImage"] = ("registry.example.com/" + "very-long-project/" * 6
                                     + "hello:${KERNEL_FULL_VERSION}")
    return write(tmp_path, doc)


@pytest.mark.parametrize("columns", [None, "80", "60"])
def test_plan_table_fits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                         columns: str | None) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(_long_module(tmp_path)),
                     "--kernel", "6.1.0-56-amd64", "--kernel", "6.12.57+deb12-amd64",
                     "--no-state")
    assert code == 0, text
    limit = int(columns or 120)
    table = [line for line in text.splitlines() if line.startswith(("KERNEL", "---", "6."))]
    assert len(table) == 4
    assert max(len(line) for line in table) <= limit
    assert "…" in text  # the image was cut, not wrapped into the next column


def test_plan_json_keeps_names_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(_long_module(tmp_path)),
                     "--kernel", "6.1.0-56-amd64", "--no-state", "--json")
    assert code == 0 and "very-long-project/" * 6 in text and "…" not in text


def test_fit_takes_from_the_widest_first() -> None:
    assert fit([10, 50, 30], [6, 5, 5], 60) == [10, 23, 23]
    assert sum(fit([10, 50, 30], [6, 5, 5], 60)) + 4 <= 60
    assert fit([10, 20], [10, 20], 5) == [10, 20]  # floors hold: nothing is cut to nothing
